#!/usr/bin/env bash
# `make run`: a working bus in one command. Starts nats-server on
# 127.0.0.1:${SWITCHBOARD_PORT:-4222}, the ping bot as an operator, and a
# chat console in this terminal. Ctrl-D or Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${SWITCHBOARD_PORT:-4222}
mkdir -p .run
nats=${SWITCHBOARD_NATS_SERVER:-.tools/venv/bin/nats-server}
bin=target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
  echo "port $port is taken (another bus?): set SWITCHBOARD_PORT=<free port> and retry" >&2
  exit 1
fi
"$nats" -a 127.0.0.1 -p "$port" -js -sd .run/jetstream >.run/nats-server.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.05
done
echo "nats-server listening on nats://127.0.0.1:$port (log: .run/nats-server.log)"

SWITCHBOARD_ID=pingbot SWITCHBOARD_NATS_URL="nats://127.0.0.1:$port" \
  "$bin/switchboard-pingbot" 2>>.run/pingbot.log &
pids+=($!)
echo "pingbot running (log: .run/pingbot.log)"

"$bin/switchboard-console" --url "nats://127.0.0.1:$port"
