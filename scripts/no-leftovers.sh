#!/usr/bin/env bash
# The end of `make test`: no process started from this checkout's target
# directory may still run (a test that leaks a daemon, an operator or a
# `switchboard tail` leaves it to run forever with parent 1). Waits up to
# 3 s for processes that are already on their way out, then lists what is
# left (pid, parent, command line) and fails.
set -uo pipefail
cd "$(dirname "$0")/.."
target="$(pwd -P)/target/"
leftovers() {
  for exe in /proc/[0-9]*/exe; do
    pid=${exe#/proc/}; pid=${pid%/exe}
    path=$(readlink "$exe" 2>/dev/null) || continue
    case "$path" in
      "$target"*) echo "$pid" ;;
    esac
  done
}
for _ in $(seq 1 30); do
  left=$(leftovers)
  [ -z "$left" ] && { echo "no process left from $target"; exit 0; }
  sleep 0.1
done
echo "processes started from $target are still running after the tests:" >&2
for pid in $left; do
  ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
  echo "  pid $pid (parent $ppid): $cmd" >&2
done
echo "a test leaked them: find it by the command line, make it stop what it starts (also on failure); then kill these pids" >&2
exit 1
