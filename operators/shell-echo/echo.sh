#!/usr/bin/env bash
# A Switchboard operator in bash, controlled by signals (control = "signals"):
# answers "!sh <text>" with "<text>" in the same room. It speaks NATS only
# through the switchboard CLI: `switchboard tail` to listen, `switchboard pub`
# to answer, both with the operator's own credentials from the launch
# environment (SWITCHBOARD_NATS_URL/_USER and the file that
# SWITCHBOARD_NATS_PASSWORD_FILE names; never a password in the environment).
#
# Signals (docs/PROTOCOL.md, Signals): SIGTERM/SIGINT stop it (exit 0),
# SIGHUP re-reads SWITCHBOARD_CONFIG_FILE, SIGSTOP/SIGCONT (halt/resume)
# freeze and thaw it with no code here.
#
# Config (the manifest's [config]): {"prefix": "!sh "}. The CLI binary is
# $SB_CLI, else `switchboard` on PATH.
set -u

SB=${SB_CLI:-switchboard}
ID=${SWITCHBOARD_ID:?SWITCHBOARD_ID is required}

# The `prefix` string of a JSON config (the orchestrator writes it compact);
# "!sh " when absent.
prefix_of() {
  local p
  p=$(printf '%s' "$1" | sed -n 's/.*"prefix":"\([^"\\]*\)".*/\1/p')
  printf '%s' "${p:-!sh }"
}

# The config: the file the daemon writes (SWITCHBOARD_CONFIG_FILE), else
# SWITCHBOARD_CONFIG (an operator run by hand), else {}.
config_text() {
  if [ -n "${SWITCHBOARD_CONFIG_FILE:-}" ]; then
    cat "$SWITCHBOARD_CONFIG_FILE"
  else
    printf '%s' "${SWITCHBOARD_CONFIG:-{\}}"
  fi
}

PREFIX=$(prefix_of "$(config_text)")

reload() {
  if [ -n "${SWITCHBOARD_CONFIG_FILE:-}" ] && [ -r "$SWITCHBOARD_CONFIG_FILE" ]; then
    PREFIX=$(prefix_of "$(cat "$SWITCHBOARD_CONFIG_FILE")")
    echo "reloaded: prefix now \"$PREFIX\"" >&2
  else
    echo "SIGHUP: no readable SWITCHBOARD_CONFIG_FILE; config unchanged" >&2
  fi
}

TAIL=
stop() {
  [ -n "$TAIL" ] && kill "$TAIL" 2>/dev/null
  echo "stopped" >&2
  exit 0
}
trap stop TERM INT
trap reload HUP

# `switchboard tail` prints "<timestamp> <subject> [<source>] <body JSON>".
# Its output comes through a FIFO so that `read` (a builtin) is what waits:
# bash runs a trap as soon as a trapped signal interrupts `read`.
FIFO=$(mktemp -u "${TMPDIR:-/tmp}/shell-echo.XXXXXX")
mkfifo "$FIFO"
# SIGHUP goes to the whole process group: the tail ignores it (an ignored
# signal stays ignored across exec), only this script reloads. The tail
# must not outlive this script, however it ends (a SIGKILL runs no trap):
# util-linux `setpriv --pdeathsig` has the kernel send it SIGTERM when its
# parent, this script, dies. Without setpriv, the trap above is all.
PDEATH=()
command -v setpriv >/dev/null 2>&1 && PDEATH=(setpriv --pdeathsig TERM --)
(trap '' HUP; exec "${PDEATH[@]}" "$SB" tail 'chat.*.*.*.message' >"$FIFO" 2>/dev/null) &
TAIL=$!
exec 3<"$FIFO"
rm -f "$FIFO"
echo "listening on chat.*.*.*.message for \"$PREFIX\"" >&2

while true; do
  if ! read -r _ts subject source body <&3; then
    # A signal interrupted read (its trap already ran): read again, unless
    # the tail itself is gone.
    kill -0 "$TAIL" 2>/dev/null || { echo "switchboard tail ended" >&2; exit 1; }
    continue
  fi
  case "$source" in \[*\]) ;; *) continue ;; esac # not an envelope: skip
  # The text as it stands in the JSON, escapes and all: the answer reuses
  # it as is, so it never needs unescaping and re-escaping.
  text=$(printf '%s' "$body" | sed -n 's/.*"text":"\(\([^"\\]\|\\.\)*\)".*/\1/p')
  case "$text" in "$PREFIX"?*) ;; *) continue ;; esac
  reply=${text#"$PREFIX"}
  IFS=. read -r _chat proto inst room _kind <<<"$subject"
  "$SB" pub --source "$ID" "send.$proto.$inst.$room.message" "{\"text\":\"$reply\"}" \
    >/dev/null 2>&1 || echo "could not answer on send.$proto.$inst.$room.message" >&2
done
