#!/usr/bin/env bash
# The Debian package under a real systemd (`make test-service`, issue 20):
# boots a cached Debian 12 (debootstrap) in systemd-nspawn with a
# throw-away overlay and no network but its own loopback, installs the
# package and checks, from the host through nsenter:
#   the unit starts (Type=notify) as the system user and rates <= 3.0 in
#   `systemd-analyze security`; bubblewrap runs under the unit's settings;
#   !ping is answered through the installed daemon and ping bot; the
#   journal has OPERATOR= fields; `systemctl reload` adds a manifest; a
#   SIGKILLed operator comes back; the watchdog restarts a SIGSTOPped
#   daemon; an upgrade keeps config and state; `systemctl stop` leaves no
#   process; purge removes config, state and logs.
# Usage: scripts/test-service.sh ROOTFS FIRST.deb UPGRADE.deb (as root).
set -euo pipefail
rootfs=$1 deb1=$2 deb2=$3
[ "$(id -u)" = 0 ] || { echo "test-service needs root (systemd-nspawn)"; exit 1; }
for f in "$deb1" "$deb2"; do [ -f "$f" ] || { echo "missing $f: run make deb"; exit 1; }; done
debdir=$(cd "$(dirname "$deb1")" && pwd)
work=$(mktemp -d /tmp/switchboard-test-service.XXXXXX)
machine=sbtest$$
nspawn_pid=

cleanup() {
	local rc=$?
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		# SIGTERM: nspawn asks the container's systemd to power off.
		kill -TERM "$nspawn_pid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$nspawn_pid" 2>/dev/null || true
		wait "$nspawn_pid" 2>/dev/null || true
	fi
	if [ $rc -ne 0 ]; then
		echo "--- container console (last 40 lines)"; tail -n 40 "$work/console.log" 2>/dev/null || true
	fi
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
# A signal ends the script through exit, so the container is stopped too.
trap 'exit 130' INT TERM HUP PIPE

step() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

systemd-nspawn --quiet --register=no --keep-unit --private-network --volatile=overlay \
	--machine="$machine" -D "$rootfs" --bind-ro="$debdir":/mnt/debs --boot \
	> "$work/console.log" 2>&1 < /dev/null &
nspawn_pid=$!

# The container's init is nspawn's child.
leader=
for _ in $(seq 1 100); do
	leader=$(ps --ppid "$nspawn_pid" -o pid= 2>/dev/null | tr -d ' ' | head -n 1 || true)
	[ -n "$leader" ] && break
	sleep 0.1
done
[ -n "$leader" ] || fail "the container did not start"

# Run a command inside the container, as root, with a clean environment.
C() {
	nsenter -t "$leader" -m -u -i -n -p -C -r -w -- \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
# Poll `C sh -c "$2"` until it succeeds, for at most $1 seconds.
until_ok() {
	local limit=$1; shift
	local end=$((SECONDS + limit))
	until C sh -c "$1" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.5
	done
}
main_pid() { C systemctl show -p MainPID --value switchboard; }
ping_answered() {
	# `switchboard chat` sends each line to a console room and prints the
	# replies; it ends at EOF, so the input stays open a little.
	C sh -c '{ echo "!ping"; sleep 4; } | timeout 20 switchboard chat --room service-check' \
		> "$work/chat.out" 2>&1 || true
	grep -q 'pong' "$work/chat.out"
}
operator_pid() {
	C switchboard status --json | python3 -c '
import json, sys
for op in json.load(sys.stdin)["operators"]:
    if op["id"] == sys.argv[1] and op.get("state") == "running" and op.get("pid"):
        print(op["pid"])' "$1"
}

step "booting Debian 12 with systemd in systemd-nspawn"
until_ok 60 'systemctl is-system-running --wait | grep -Eq "running|degraded"' \
	|| fail "systemd did not finish booting"
C systemctl --version | head -n 1

step "installing $(basename "$deb1")"
C dpkg -i "/mnt/debs/$(basename "$deb1")" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
C id switchboard || fail "no system user switchboard"
until_ok 30 'systemctl is-active --quiet switchboard' || {
	C journalctl -u switchboard --no-pager -n 40 || true
	fail "switchboard.service is not active after install"
}
[ "$(C systemctl show -p User --value switchboard)" = switchboard ] || fail "not running as switchboard"
C ps -o user=,comm= -p "$(main_pid)"

step "systemd-analyze security"
C systemd-analyze security switchboard.service > "$work/security.txt" 2>&1 || true
figure=$(sed -n 's/.*Overall exposure level for switchboard.service: \([0-9.]*\).*/\1/p' "$work/security.txt")
echo "exposure: $figure"
[ -n "$figure" ] || { cat "$work/security.txt"; fail "no exposure figure"; }
awk -v f="$figure" 'BEGIN { exit !(f <= 3.0) }' || { grep '✗' "$work/security.txt"; fail "exposure $figure > 3.0"; }

step "bubblewrap runs as switchboard under the unit's own settings"
# The installed unit with its hardening as is, running bwrap instead of
# the daemon (and without the runtime directory the daemon owns).
C sed -e 's|^ExecStart=.*|ExecStart=/usr/bin/bwrap --unshare-all --share-net --die-with-parent --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin --proc /proc --dev /dev --tmpfs /tmp /usr/bin/id -u|' \
	-e 's/^Type=notify/Type=oneshot/' -e '/^WatchdogSec/d;/^ExecReload/d;/^NotifyAccess/d;/^Restart/d;/^RuntimeDirectory/d' \
	/lib/systemd/system/switchboard.service > "$work/bwrap-check.service"
C sh -c "cat > /run/systemd/system/switchboard-bwrap-check.service" < "$work/bwrap-check.service"
C systemctl daemon-reload
C systemctl start switchboard-bwrap-check.service \
	|| { C journalctl -u switchboard-bwrap-check --no-pager -n 20; fail "bwrap under the unit's settings"; }
uid=$(C id -u switchboard)
C journalctl -u switchboard-bwrap-check --no-pager -o cat | grep -qx "$uid" || fail "bwrap did not run the command"
C rm /run/systemd/system/switchboard-bwrap-check.service
C systemctl daemon-reload

step "!ping answered through the installed daemon and ping bot"
until_ok 30 'switchboard status | grep -q "pingbot.*running"' || { C switchboard status || true; fail "pingbot not running"; }
ping_answered || { cat "$work/chat.out"; fail "no pong"; }
cat "$work/chat.out" | tr '\r' '\n' | grep pong

step "journal entries carry OPERATOR="
until_ok 10 'journalctl -u switchboard OPERATOR=pingbot --no-pager -o cat | grep -q .' \
	|| fail "no journal entry with OPERATOR=pingbot"
# The operator's own output lines: its id, its pid, the stream, a level.
C journalctl -u switchboard OPERATOR=pingbot STREAM=stderr --no-pager -o verbose -n 1 > "$work/journal.txt"
grep -E '^ +(OPERATOR|PID|STREAM|PRIORITY|MESSAGE)=' "$work/journal.txt"
grep -Eq '^ +PID=[0-9]+$' "$work/journal.txt" || fail "no PID= field on an operator's line"

step "systemctl reload adds a manifest"
C cp /usr/share/doc/switchboard/examples/dashboard.toml /etc/switchboard/operators.d/
C systemctl reload switchboard
until_ok 30 'switchboard status | grep -q "dashboard.*running"' || { C switchboard status || true; fail "dashboard not started by reload"; }
C switchboard status

step "an operator killed with SIGKILL comes back"
old=$(operator_pid pingbot)
[ -n "$old" ] || fail "no pingbot pid"
C kill -KILL "$old"
new=
for _ in $(seq 1 60); do
	new=$(operator_pid pingbot || true)
	[ -n "$new" ] && [ "$new" != "$old" ] && break
	new=
	sleep 0.5
done
[ -n "$new" ] || fail "pingbot not restarted after SIGKILL"
echo "pingbot: pid $old killed, now pid $new"
ping_answered || fail "no pong after the operator's restart"
C systemctl is-active --quiet switchboard || fail "the daemon did not survive"

step "the watchdog restarts a hung (SIGSTOPped) daemon"
C mkdir -p /run/systemd/system/switchboard.service.d
C sh -c 'printf "[Service]\nWatchdogSec=4s\n" > /run/systemd/system/switchboard.service.d/watchdog.conf'
C systemctl daemon-reload
C systemctl restart switchboard
until_ok 30 'systemctl is-active --quiet switchboard' || fail "restart with the short watchdog"
restarts=$(C systemctl show -p NRestarts --value switchboard)
hung=$(main_pid)
C kill -STOP "$hung"
until_ok 60 "[ \"\$(systemctl show -p MainPID --value switchboard)\" != $hung ] && systemctl is-active --quiet switchboard" \
	|| { C systemctl status switchboard --no-pager || true; fail "not restarted by the watchdog"; }
[ "$(C systemctl show -p NRestarts --value switchboard)" -gt "$restarts" ] || fail "NRestarts did not grow"
C journalctl -u switchboard --no-pager -o cat | grep -i 'watchdog' | tail -n 2
C rm -r /run/systemd/system/switchboard.service.d
C systemctl daemon-reload
until_ok 30 'switchboard status | grep -q "pingbot.*running"' || fail "pingbot not back after the watchdog restart"

step "upgrade to $(basename "$deb2") keeps config and state"
C sh -c 'echo "# kept across upgrades" >> /etc/switchboard/switchboard.toml'
C sh -c 'echo marker > /var/lib/switchboard/upgrade-marker && chown switchboard: /var/lib/switchboard/upgrade-marker'
ping_answered || fail "no pong before the upgrade"
before=$(main_pid)
C dpkg -i "/mnt/debs/$(basename "$deb2")" > "$work/dpkg2.log" 2>&1 < /dev/null || { cat "$work/dpkg2.log"; fail "upgrade"; }
C dpkg-query -W switchboard
until_ok 30 'systemctl is-active --quiet switchboard' || fail "not active after the upgrade"
[ "$(main_pid)" != "$before" ] || fail "the daemon was not restarted by the upgrade"
C grep -q "kept across upgrades" /etc/switchboard/switchboard.toml || fail "config change lost"
C test -f /etc/switchboard/operators.d/dashboard.toml || fail "added manifest lost"
C grep -q marker /var/lib/switchboard/upgrade-marker || fail "state lost"
# The durable stream (JetStream under /var/lib/switchboard) still has the
# !ping from before the upgrade.
until_ok 30 'switchboard status | grep -q "pingbot.*running"' || fail "pingbot not running after the upgrade"
C switchboard replay 'chat.console.#' --since 1h > "$work/replay.out" 2>&1 || true
grep -q '!ping' "$work/replay.out" || { cat "$work/replay.out"; fail "stream history lost in the upgrade"; }
ping_answered || fail "no pong after the upgrade"

step "systemctl stop leaves no process"
C systemctl stop switchboard
left=$(C ps -u switchboard -o pid=,comm= || true)
[ -z "$left" ] || fail "left behind: $left"
C sh -c '! pgrep -x nats-server' || fail "nats-server left behind"

step "purge removes config, state and logs"
C systemctl start switchboard
until_ok 30 'systemctl is-active --quiet switchboard' || fail "start before purge"
C dpkg --purge switchboard > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "purge"; }
for p in /etc/switchboard /var/lib/switchboard /var/log/switchboard /usr/bin/switchboard \
	/usr/libexec/switchboard /lib/systemd/system/switchboard.service; do
	C test ! -e "$p" || fail "$p still there after purge"
done
left=$(C ps -u switchboard -o pid=,comm= || true)
[ -z "$left" ] || fail "left behind after purge: $left"
C systemctl is-enabled switchboard >/dev/null 2>&1 && fail "unit still enabled after purge"

step "all checks passed"
