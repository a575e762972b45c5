"""The operator runtime: what `switchboard_bus::run` does in Rust, for Python.

A `Bot` reads the launch environment, connects with the operator's own
credentials and inbox prefix, subscribes, announces ready, heartbeats with
counters and health, answers every control verb, handles SIGTERM, SIGINT
and SIGHUP, and shuts down with a final heartbeat; the bot's author writes
only what it says. Behaviour follows docs/PROTOCOL.md ("Lifecycle"), and
where the page leaves a choice, the Rust runtime's.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import inspect
import json
import logging
import os
import re
import signal
import ssl
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Union

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .envelope import EnvelopeError, chat_subject, make_envelope, now, parse_envelope, unescape_token
from .launch import Launch, LaunchError, read_config
from .log import init_logging

__all__ = ["Bot", "Message", "Refused", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
VERBS = ("halt", "resume", "reload", "restart", "shutdown")
DEFAULT_LISTEN = ["chat.*.*.*.message"]
DEDUPE_WINDOW = 8192
# The SDK's own heartbeat counters; an operator's counter of the same name is sent as `op_<name>`.
SDK_COUNTERS = ("received", "published", "malformed", "duplicates", "dropped", "handler_errors",
                "reconnects", "disconnects", "discarded", "forged")
# An operator id: what the instance token of a chat subject must be to have an owner.
_OPERATOR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PENDING_MSGS = 65536
_SUBJECT_TOKEN = re.compile(r"[^\s*>.]+|\*|>")
_PERMISSION = re.compile(r'Permissions Violation for (Subscription|Publish) to "?([^"\s]+)"?', re.I)

Reply = Union[str, None]
Handler = Callable[["Message"], Union[Reply, Awaitable[Reply]]]
Hook = Callable[["Bot"], Union[None, Awaitable[None]]]


class Refused(Exception):
    """A control request refused with a failure code (`bad_request`, `invalid_config`, `handler_failed`).

    Raise it (or ValueError, read as `invalid_config`) from a `check_config`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def kind(self) -> str:
        """The failure code, for callers that branch."""
        return self.code


@dataclass
class Message:
    """A chat message the bot received, with what a reply needs."""

    subject: str
    envelope: dict[str, Any]
    protocol: str
    instance: str
    room: str
    kind: str
    bot: "Bot" = field(repr=False)
    match: "re.Match[str] | None" = None

    @property
    def body(self) -> Any:
        return self.envelope["body"]

    @property
    def text(self) -> str:
        """The text, or "" when the body is not a chat message."""
        text = self.body.get("text") if isinstance(self.body, dict) else None
        return text if isinstance(text, str) else ""

    @property
    def sender(self) -> str:
        sender = self.body.get("sender") if isinstance(self.body, dict) else None
        return sender if isinstance(sender, str) else ""

    @property
    def private(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("private") is True

    @property
    def args(self) -> tuple[str, ...]:
        """The groups the command's regex captured ("" for one that took no part)."""
        return tuple(g or "" for g in self.match.groups()) if self.match else ()

    @property
    def id(self) -> str | None:
        """The envelope's `id` header, if it had one."""
        value = self.envelope["headers"].get("id")
        return value if isinstance(value, str) else None

    @property
    def source(self) -> str:
        """The operator that published it."""
        return str(self.envelope["source"])

    async def reply(self, text: str) -> None:
        """Answer in the same room (or private conversation), with `in-reply-to` set."""
        tokens = self.subject.split(".")
        headers = {"room": self.room}
        if self.id is not None:
            headers["in-reply-to"] = self.id
        await self.bot.publish(".".join(["send", tokens[1], tokens[2], tokens[3], "message"]),
                               {"text": text}, headers)


@dataclass
class _Command:
    regex: "re.Pattern[str]"
    handler: Handler


class Bot:
    """An operator. Decorate handlers, then call `run()`.

    `config` declares the keys the manifest's `[config]` may have, with
    their defaults (a key not declared is refused as `invalid_config`, so a
    typo is never silently ignored); the SDK adds `listen`, the NATS
    subjects to read (default `chat.*.*.*.message`). `check_config`, if
    given, gets the complete config and raises ValueError (or `Refused`)
    to refuse it.
    """

    def __init__(self, *, config: dict[str, Any] | None = None,
                 check_config: Callable[[dict[str, Any]], None] | None = None,
                 version: str | None = None) -> None:
        self._defaults: dict[str, Any] = {"listen": list(DEFAULT_LISTEN), **(config or {})}
        self._check = check_config
        self.version = version
        self._commands: list[_Command] = []
        self._on_message: list[Handler] = []
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self.config: dict[str, Any] = dict(self._defaults)
        self.launch: Launch | None = None
        self.log = logging.getLogger("switchboard")
        self.state = "starting"
        self._nc: Client | None = None
        self._subs: list[Subscription] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seq = 0
        self._started = time.monotonic()
        self._health: tuple[str, str | None] = ("ok", None)
        self._sub_failures: dict[str, str] = {}
        self._exit_code = 0
        self._warned = float("-inf")
        self.counters: dict[str, int] = dict.fromkeys(SDK_COUNTERS, 0)
        self._generation = 0  # +1 whenever the chat subscriptions are dropped
        self._running = asyncio.Event()  # cleared while halted: deliveries wait in their queues
        self._lock = asyncio.Lock()  # one control action at a time (verbs, SIGHUP, shutdown)
        self._done = asyncio.Event()

    # ---- what a bot's author uses ---------------------------------------------------------

    def command(self, pattern: str) -> Callable[[Handler], Handler]:
        """Handle chat messages whose text matches `pattern` (re.search); `msg.match` has the groups.

        A handler returns the reply text (or None for no reply); it may be async.
        """
        regex = re.compile(pattern)

        def register(handler: Handler) -> Handler:
            self._commands.append(_Command(regex, handler))
            return handler
        return register

    def on_message(self, handler: Handler) -> Handler:
        """Handle every chat message received (after the commands that matched it)."""
        self._on_message.append(handler)
        return handler

    def on_start(self, hook: Hook) -> Hook:
        """Run at start, after a reload and at an in-place restart, before ready: set up from `bot.config`."""
        self._on_start.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Run before a reload, an in-place restart and at shutdown: undo what on_start did."""
        self._on_stop.append(hook)
        return hook

    @property
    def id(self) -> str:
        return self.launch.id if self.launch else ""

    @property
    def state_dir(self) -> str | None:
        """The directory kept across restarts (inside the sandbox, the only lasting place to write)."""
        return self.launch.state_dir if self.launch else None

    @property
    def scratch_dir(self) -> str | None:
        """A directory for temporary files, wiped when the operator stops."""
        return self.launch.scratch_dir if self.launch else None

    def count(self, name: str, n: int = 1) -> None:
        """Add to an operator counter, sent in every heartbeat (the SDK's own names get `op_`)."""
        key = "op_" + name if name in SDK_COUNTERS else name
        self.counters[key] = self.counters.get(key, 0) + n

    def set_health(self, health: str, reason: str | None = None) -> None:
        """Report `ok`, `degraded` or `failed`, with a reason a person can act on (never a secret).

        A change sends a heartbeat at once.
        """
        if health not in ("ok", "degraded", "failed"):
            raise ValueError(f"health must be ok, degraded or failed, not {health!r}")
        new = (health, None if health == "ok" else (reason or health)[:512])
        if new != self._health:
            self._health = new
            if self._nc is not None and self.state != "starting":
                asyncio.get_running_loop().create_task(self._heartbeat_logged())

    async def publish(self, subject: str, body: Any, headers: dict[str, str] | None = None) -> None:
        """Publish `body` in an envelope from this operator (a fresh `id`, the timestamp)."""
        if self._nc is None:
            raise RuntimeError("not connected: publish from a handler or hook")
        await self._nc.publish(subject, make_envelope(self.id, body, headers))
        self.counters["published"] += 1

    async def send(self, protocol: str, instance: str, room: str, text: str, kind: str = "message") -> None:
        """Say `text` in a room: publishes on `send.<protocol>.<instance>.<room>.<kind>` (needs a grant)."""
        await self.publish(chat_subject("send", protocol, instance, room, kind), {"text": text}, {"room": room})

    def run(self) -> None:
        """Run until shutdown; exits the process (0 after a clean stop, 1 on a startup error)."""
        try:
            code = asyncio.run(self.main())
        except LaunchError as e:
            logging.getLogger("switchboard").error("bad launch environment: %s", e)
            code = 1
        sys.exit(code)

    # ---- the runtime ----------------------------------------------------------------------

    async def main(self, launch: Launch | None = None) -> int:
        """The whole life of the operator; the exit code. `launch` defaults to the environment."""
        self.launch = launch or Launch.from_env()
        self.log = init_logging(self.launch.id)
        try:
            self.config = self._checked(self.launch.config)
        except Refused as e:
            self.log.error("the config is not valid: %s", e)
            return 1
        try:
            self._nc = await self._connect(self.launch)
        except ConnectionError as e:
            self.log.error("%s", e)
            return 1
        self._started = time.monotonic()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._done.set)
        tasks: set[asyncio.Task[None]] = set()
        loop.add_signal_handler(signal.SIGHUP, lambda: tasks.add(loop.create_task(self._on_sighup())))
        await self._nc.subscribe(f"sb.ctl.{self.id}", cb=self._on_control)
        try:
            await self._start()
        except Exception as e:
            self.log.error("start failed: %s", e)
            await self._nc.close()
            return 1
        self.state = "running"
        self._running.set()
        await self._announce_ready()
        self.log.info("ready", extra={"listen": " ".join(self.config["listen"])})
        tasks.add(loop.create_task(self._beat()))
        await self._done.wait()
        await self._shutdown(tasks)
        return self._exit_code

    def _checked(self, config: Any) -> dict[str, Any]:
        """The complete config with defaults, or Refused("invalid_config") naming the key, never a value."""
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise Refused("invalid_config", "the config must be a JSON object (a TOML table)")
        for key in config:
            if key not in self._defaults:
                known = ", ".join(f"`{k}`" for k in self._defaults)
                raise Refused("invalid_config", f"unknown config key `{key}`; known keys: {known}")
        merged = {**self._defaults, **config}
        for key, default in self._defaults.items():
            value = merged[key]
            if default is not None and not _same_type(value, default):
                raise Refused("invalid_config", f"config key `{key}` must be {_type_name(default)}")
        listen = merged["listen"]
        if not listen or not all(isinstance(s, str) and _is_subject(s) for s in listen):
            raise Refused("invalid_config", "config key `listen` must be a non-empty list of NATS subjects "
                                            "like \"chat.*.*.*.message\" (`*` one token, `>` the rest)")
        if self._check is not None:
            try:
                self._check(merged)
            except Refused:
                raise
            except ValueError as e:
                raise Refused("invalid_config", str(e)) from None
        return merged

    async def _connect(self, launch: Launch) -> Client:
        opts: dict[str, Any] = {"name": launch.id, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                                "pending_size": 64 * 1024 * 1024}
        if launch.user is not None:
            opts.update(user=launch.user, password=launch.password)
        if launch.token is not None:
            opts["token"] = launch.token
        if launch.inbox_prefix is not None:  # the server lets us subscribe to our own inboxes only
            opts["inbox_prefix"] = launch.inbox_prefix
        if launch.creds is not None or launch.nkey is not None:
            if importlib.util.find_spec("nkeys") is None:  # nats-py signs with it
                raise LaunchError("SWITCHBOARD_NATS_CREDS/NKEY", "set, but the `nkeys` package is not "
                                  "installed: `pip install nkeys`")
            if launch.creds is not None:
                opts["user_credentials"] = launch.creds
            if launch.nkey is not None:
                opts["nkeys_seed"] = launch.nkey
        if launch.tls_ca is not None or launch.tls_cert is not None:
            try:
                tls = ssl.create_default_context(cafile=launch.tls_ca)
                if launch.tls_cert is not None and launch.tls_key is not None:
                    tls.load_cert_chain(launch.tls_cert, launch.tls_key)
            except (OSError, ssl.SSLError) as e:
                raise LaunchError("SWITCHBOARD_NATS_TLS_*", f"cannot load the TLS files: {e}") from None
            opts["tls"] = tls
        urls = launch.urls
        # An authorization refusal is retried for 0.5 s: the embedded server re-checks every
        # client when it reloads its users, and refuses one whose CONNECT is in flight then.
        refused_until = time.monotonic() + 0.5
        deadline = time.monotonic() + 10
        while True:
            try:
                return await asyncio.wait_for(nats.connect(
                    urls, error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected, closed_cb=self._on_closed, **opts),
                    max(deadline - time.monotonic(), 0.1))
            except asyncio.TimeoutError:
                raise ConnectionError(f"no NATS server accepted us within 10 s at {' '.join(urls)}") from None
            except Exception as e:
                refused = isinstance(e, nats.errors.AuthorizationError) or "authorization" in str(e).lower()
                if not refused or time.monotonic() > refused_until:
                    raise ConnectionError(f"NATS at {' '.join(urls)} refused us: {e}") from None
                await asyncio.sleep(0.05)

    async def _start(self) -> None:
        """Subscribe per config, then the author's on_start hooks."""
        self._sub_failures.clear()
        assert self._nc is not None
        for subject in self.config["listen"]:
            cb = functools.partial(self._on_chat, self._generation)
            self._subs.append(await self._nc.subscribe(subject, cb=cb, pending_msgs_limit=PENDING_MSGS))
        for hook in self._on_start:
            await _call(hook, self)
        # PING/PONG: the server has seen the subscriptions, and refused (-ERR, before the PONG)
        # any its grants do not cover; _on_error has recorded those.
        await self._nc.flush(timeout=5)
        await asyncio.sleep(0)
        self._judge_subscriptions()

    def _judge_subscriptions(self) -> None:
        """A subscription the server refused leaves the bot deaf: report health `failed`, saying what to do."""
        refused = [s for s in self.config["listen"] if s in self._sub_failures]
        if refused:
            self.set_health("failed", f"not allowed to subscribe to {', '.join(refused)}: the manifest's "
                                      "`subscribe` grants do not cover it; widen the grant or change `listen`")
        elif self._health[0] == "failed" and (self._health[1] or "").startswith("not allowed to subscribe"):
            self.set_health("ok")

    async def _stop(self) -> None:
        """The author's on_stop hooks, then drop the chat subscriptions (held deliveries with them)."""
        for hook in self._on_stop:
            try:
                await _call(hook, self)
            except Exception as e:
                self.log.warning("on_stop failed: %s", e)
        subs, self._subs = self._subs, []
        self._generation += 1
        for sub in subs:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # already closed

    async def _announce_ready(self) -> None:
        assert self._nc is not None
        await self._nc.flush()  # the server has our subscriptions before it routes ready
        ready: dict[str, Any] = {"id": self.id, "pid": os.getpid(), "protocol": PROTOCOL_VERSION}
        if self.version:
            ready["version"] = self.version
        ready["timestamp"] = now()
        await self._nc.publish(f"sb.op.{self.id}.ready", _dumps(ready))
        self.counters["published"] += 1
        await self._nc.flush()
        if self._health[0] != "ok":  # status shows why at once, not an interval later
            await self._heartbeat_logged()

    async def _heartbeat(self) -> None:
        assert self._nc is not None
        self._seq += 1
        beat: dict[str, Any] = {"id": self.id, "pid": os.getpid(), "seq": self._seq, "state": self.state,
                                "uptime_ms": int((time.monotonic() - self._started) * 1000),
                                "counters": dict(self.counters)}
        if self._health[0] != "ok":
            beat["health"], beat["health_reason"] = self._health
        beat["timestamp"] = now()
        await self._nc.publish(f"sb.op.{self.id}.heartbeat", _dumps(beat))
        self.counters["published"] += 1

    async def _heartbeat_logged(self) -> None:
        try:
            await self._heartbeat()
        except Exception as e:
            self.log.warning("heartbeat not sent: %s", e)

    async def _beat(self) -> None:
        """The first heartbeat one interval after ready; a late one is delayed, never doubled."""
        assert self.launch is not None
        while True:
            await asyncio.sleep(self.launch.heartbeat_ms / 1000)
            await self._heartbeat_logged()

    # ---- receiving ------------------------------------------------------------------------

    def _authentic(self, subject: str, envelope: dict[str, Any]) -> bool:
        """Whether `envelope` may have come from its `source` on `subject`.

        docs/PROTOCOL.md, "Authentic source": a chat event
        `chat.<protocol>.<instance>.…` belongs to the operator whose id is
        `<instance>`; one whose `source` is anyone else (or whose instance
        token is no operator id) is forged. Other subjects name no owner:
        their `source` is a claim, passed on unchecked.
        """
        if not subject.startswith("chat."):
            return True
        tokens = subject.split(".", 3)
        if len(tokens) < 3:
            return False
        instance = tokens[2]
        return _OPERATOR_ID.fullmatch(instance) is not None and envelope.get("source") == instance

    async def _on_chat(self, generation: int, msg: Msg) -> None:
        await self._running.wait()  # halted: this delivery, and those queued behind it, are held
        if generation != self._generation:
            self.counters["discarded"] += 1  # its subscription went with a reload or restart
            return
        try:
            env = parse_envelope(msg.data)
        except EnvelopeError as e:
            self.counters["malformed"] += 1
            if time.monotonic() - self._warned >= 10:  # at most one warning per 10 s
                self._warned = time.monotonic()
                self.log.warning("dropped a malformed envelope on %s (%d so far): %s", msg.subject,
                                 self.counters["malformed"], e)
            return
        if not self._authentic(msg.subject, env):
            self.counters["forged"] += 1
            if time.monotonic() - self._warned >= 10:  # at most one warning per 10 s
                self._warned = time.monotonic()
                self.log.warning("dropped a forged chat event on %s: source `%s` does not own it "
                                 "(%d so far)", msg.subject, env.get("source"), self.counters["forged"])
            return
        ident = env["headers"].get("id")
        if ident is not None:
            if ident in self._seen:
                self.counters["duplicates"] += 1
                return
            self._seen[ident] = None
            if len(self._seen) > DEDUPE_WINDOW:
                self._seen.popitem(last=False)
        self.counters["received"] += 1
        try:
            await self._handle(msg.subject, env)
        except Exception as e:  # one bad message never stops the operator
            self.counters["handler_errors"] += 1
            self.log.warning("handler failed on %s: %s", msg.subject, e)

    async def _handle(self, subject: str, env: dict[str, Any]) -> None:
        tokens = subject.split(".")
        if len(tokens) != 5 or tokens[0] != "chat":
            raise ValueError("not a chat subject chat.<protocol>.<instance>.<room>.<kind>")
        protocol, instance, room = (unescape_token(t) for t in tokens[1:4])
        message = Message(subject, env, protocol, instance, room, tokens[4], self)
        for command in self._commands:
            match = command.regex.search(message.text)
            if match is not None:
                message.match = match
                await self._answer(message, command.handler)
        message.match = None
        for handler in self._on_message:
            await self._answer(message, handler)

    async def _answer(self, message: Message, handler: Handler) -> None:
        reply = await _call(handler, message)
        if isinstance(reply, str) and reply and message.kind != "notice":  # notices are never answered
            await message.reply(reply)

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            self.counters["dropped"] += 1  # a subscription's queue was full
            return
        m = _PERMISSION.search(str(error))
        if m and m[1].lower() == "subscription":
            self._sub_failures[m[2]] = str(error)
            self.log.error("the server refused the subscription to %s: not granted by the manifest", m[2])
            if self.state != "starting":
                self._judge_subscriptions()
            return
        if m:
            self.count("publish_refused")
        self.log.warning("nats: %s", error)

    async def _on_disconnected(self) -> None:
        self.counters["disconnects"] += 1

    async def _on_reconnected(self) -> None:
        self.counters["reconnects"] += 1

    async def _on_closed(self) -> None:
        self._done.set()  # gone for good: shut down

    # ---- control --------------------------------------------------------------------------

    async def _on_control(self, msg: Msg) -> None:
        verb: str | None = None
        error: dict[str, str] | None = None
        async with self._lock:
            try:
                verb, config = _parse_control(msg.data)
                await self._control(verb, config)
            except Exception as e:
                code = e.code if isinstance(e, Refused) else "handler_failed"
                error = {"code": code, "message": str(e)}
                self.log.warning("control %s refused: %s", verb or "request", e)
            ack: dict[str, Any] = {"ok": error is None, "id": self.id}
            if verb is not None:
                ack["verb"] = verb
            ack["state"] = self.state
            if error is not None:
                ack["error"] = error
            assert self._nc is not None
            if msg.reply:  # a request without a reply subject is carried out, not answered
                await self._nc.publish(msg.reply, _dumps(ack))
                self.counters["published"] += 1
                await self._nc.flush()
            if verb == "shutdown" or self._exit_code:
                self._done.set()

    async def _control(self, verb: str, config: Any) -> None:
        if verb == "halt" and self.state == "running":
            self.state = "halted"
            self._running.clear()
        elif verb == "resume" and self.state == "halted":
            self.state = "running"
            self._running.set()  # held deliveries are handled now, in order per subscription
        elif verb == "reload":
            await self._reload(config)
        elif verb == "restart":
            await self._restart()
        elif verb == "shutdown":
            self.state = "stopping"

    async def _reload(self, config: Any) -> None:
        new, old = self._checked(config), self.config  # invalid_config: nothing changes
        await self._stop()
        self.config = new
        try:
            await self._start()
        except Exception as e:  # half set up: restart in place with the previous config
            self.config = old
            await self._restart()
            raise Refused("handler_failed", f"reload failed, previous config restored: {e}") from None

    async def _restart(self) -> None:
        """In place: the same process, seq and uptime go on; ready again."""
        self.state = "starting"
        self._running.clear()
        await self._stop()
        try:
            self.config = self._checked(self.config)
            await self._start()
        except Exception as e:
            self._exit_code = 1  # this process cannot work: ack, then exit non-zero
            raise Refused("handler_failed", f"restart failed, exiting: {e}") from None
        self.state = "running"  # a restart resumes a halted operator, as in the Rust runtime
        self._running.set()
        await self._announce_ready()

    async def _on_sighup(self) -> None:
        """Reload with SWITCHBOARD_CONFIG_FILE (the daemon rewrote it), else with the current config."""
        config: Any = self.config
        if self.launch is not None and self.launch.config_file:
            try:
                config = read_config({"SWITCHBOARD_CONFIG_FILE": self.launch.config_file})
            except LaunchError as e:
                self.log.warning("SIGHUP: %s; reloading the current config", e)
        async with self._lock:
            try:
                if self.state != "stopping":
                    await self._reload(config)
                    self.log.info("SIGHUP: config reloaded")
            except Exception as e:
                self.log.error("SIGHUP: reload failed, old config kept: %s", e)
            if self._exit_code:
                self._done.set()

    async def _shutdown(self, tasks: set[asyncio.Task[None]]) -> None:
        """docs/PROTOCOL.md, Shutdown: drain briefly, drop subscriptions, final heartbeat, flush."""
        assert self._nc is not None
        async with self._lock:  # after a control action in flight
            for task in tasks:
                task.cancel()
            if self._running.is_set():  # not halted: deliveries already here, for at most 500 ms
                try:
                    drains = [s.drain() for s in self._subs]  # type: ignore[no-untyped-call]
                    await asyncio.wait_for(asyncio.gather(*drains), 0.5)
                except (asyncio.TimeoutError, nats.errors.Error):
                    pass
            self.state = "stopping"
            await self._stop()  # cancels the callbacks of held deliveries with their subscriptions
            try:
                await self._heartbeat()
                await asyncio.wait_for(self._nc.flush(), 1)
            except (asyncio.TimeoutError, nats.errors.Error) as e:
                self.log.warning("final heartbeat not flushed: %s", e)
            await self._nc.close()
        self.log.info("stopped")


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _type_name(default: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(default), type(default).__name__)


def _is_subject(s: str) -> bool:
    tokens = s.split(".")
    return all(_SUBJECT_TOKEN.fullmatch(t) for t in tokens) and ">" not in tokens[:-1]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def _call(fn: Callable[[Any], Any], arg: Any) -> Any:
    result = fn(arg)
    if inspect.isawaitable(result):
        result = await result
    return result


def _kind(v: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean"}
    return "JSON null" if v is None else "a JSON " + names.get(type(v), "number")


def _parse_control(data: bytes) -> tuple[str, Any]:
    """(verb, config) of a control request, or Refused("bad_request") worded like the Rust runtime."""
    try:
        req = json.loads(data)
    except ValueError as e:
        raise Refused("bad_request", f"control request is not valid JSON: {e}") from None
    verbs = ", ".join(VERBS)
    if not isinstance(req, dict):
        problem = f'must be a JSON object like {{"verb":"halt"}}, but it is {_kind(req)}'
    elif "verb" not in req:
        problem = f'has no `verb` field; send e.g. {{"verb":"halt"}} (verbs: {verbs})'
    elif not isinstance(req["verb"], str):
        problem = f"field `verb` must be a JSON string, but it is {_kind(req['verb'])}"
    elif req["verb"] not in VERBS:
        problem = f"has unknown control verb `{req['verb'][:64]}`; valid verbs are {verbs}"
    elif req["verb"] == "reload" and "config" not in req:
        problem = '`reload` has no `config` field; send the complete new config, e.g. {"verb":"reload","config":{}}'
    else:
        return req["verb"], req.get("config")
    raise Refused("bad_request", "control request " + problem)
