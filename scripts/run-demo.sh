#!/usr/bin/env bash
# `make run`: a working bus in one command. Starts the orchestrator with
# deploy/dev/switchboard.toml (embedded nats-server on 127.0.0.1:4222 and
# the ping bot), shows its status, then opens a chat console in this
# terminal. Ctrl-D or Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
conf=deploy/dev/switchboard.toml
sb=target/release/switchboard
mkdir -p .run
daemon=
cleanup() {
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"
    wait "$daemon" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

"$sb" run --config "$conf" 2>>.run/switchboard.log &
daemon=$!
echo "switchboard started (pid $daemon, log: .run/switchboard.log)"
for _ in $(seq 1 100); do
  if "$sb" status --config "$conf" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$daemon" 2>/dev/null; then
    echo "switchboard exited; last log lines:" >&2
    tail -n 20 .run/switchboard.log >&2
    exit 1
  fi
  sleep 0.1
done
sleep 0.3
"$sb" status --config "$conf"
echo
# One command per line: joined with `|` they read as a shell pipeline
# (and `tail` would run the system's).
echo "In another terminal (SWITCHBOARD_TOML=$conf saves the --config):"
echo "  $sb --config $conf status"
echo "  $sb --config $conf logs pingbot -f"
echo "  $sb --config $conf tail 'chat.#'"
echo "  $sb --config $conf ctl restart pingbot"
"$sb" chat --config "$conf"
