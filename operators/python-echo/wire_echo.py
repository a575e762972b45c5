"""The wire example: a complete Switchboard operator in Python with nats-py and the stdlib, no SDK.

Answers "!py <text>" with "<text>". echo.py is the same operator on sdk/python, in a
tenth of the lines; this file shows the protocol by hand, for languages without an SDK.

It speaks the whole operator contract of docs/PROTOCOL.md: launch environment, envelope validation
and dedupe, ready, heartbeats with counters, every control verb (acked), SIGTERM/SIGINT (shutdown),
SIGHUP (reload from SWITCHBOARD_CONFIG_FILE), exit 0 when stopped. Bad input is counted, never fatal.

Config (the manifest's [config] table; unknown keys are refused):
  listen  NATS subjects (`*` = one token, `>` = the rest), default ["chat.*.*.*.message"]
  prefix  the text that triggers an answer, default "!py "
Run by hand: SWITCHBOARD_ID=py-echo SWITCHBOARD_NATS_URL=nats://127.0.0.1:4222 python3 wire_echo.py
"""
import asyncio, datetime, json, logging, os, re, secrets, signal, ssl, sys, time
from functools import partial
import nats

VERBS = ("halt", "resume", "reload", "restart", "shutdown")
DEFAULTS = {"listen": ["chat.*.*.*.message"], "prefix": "!py "}
RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:[Zz]|[+-](\d\d):(\d\d))", re.A)
PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
ID = os.environ.get("SWITCHBOARD_ID", "").strip()
log = logging.getLogger("echo")


class Refused(Exception):
    """A request refused with a failure code: bad_request, invalid_config or handler_failed."""
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def env(name, default=None):
    return os.environ.get(name, "").strip() or default  # a blank variable counts as unset

def secret(name):
    """`<name>_FILE` (the daemon's way: a file only this operator can read), else `<name>`."""
    path = env(name + "_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n") or None
    return env(name)

def launch_config():
    """The config: SWITCHBOARD_CONFIG_FILE, else SWITCHBOARD_CONFIG, else {}."""
    path = env("SWITCHBOARD_CONFIG_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return json.loads(env("SWITCHBOARD_CONFIG", "{}"))

def now():  # RFC 3339, UTC, exactly 6 fractional digits
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

def kind(v):
    return "JSON null" if v is None else "a JSON " + {dict: "object", list: "array", str: "string",
                                                      bool: "boolean"}.get(type(v), "number")

def unescape_token(token):
    """Subject token -> raw name; only canonical tokens (PROTOCOL.md, Token escaping), else ValueError."""
    raw = re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), token.encode())
    text = "" if token == "=" else raw.decode()
    if ("".join(chr(b) if b in PLAIN else "=%02X" % b for b in text.encode()) or "=") != token:
        raise ValueError(f"not a canonical escaped token: {token!r}")
    return text

def check_config(config):
    """The complete config with defaults filled in, or Refused("invalid_config")."""
    if not isinstance(config, dict):
        raise Refused("invalid_config", f"invalid config: expected a JSON object, but it is {kind(config)}")
    for key in config:
        if key not in DEFAULTS:
            raise Refused("invalid_config", f"invalid config: unknown field `{key}`, expected `listen` or `prefix`")
    config = {**DEFAULTS, **config}
    if not isinstance(config["prefix"], str) or not config["prefix"]:
        raise Refused("invalid_config", "invalid config: `prefix` must be a non-empty string")
    for s in (config["listen"] if isinstance(config["listen"], list) else None) or [None]:
        toks = s.split(".") if isinstance(s, str) else [""]
        if ">" in toks[:-1] or not all(t in ("*", ">") or re.fullmatch(r"[^\s*>#]+", t) for t in toks):
            raise Refused("invalid_config", "invalid config: `listen` must be a non-empty list of NATS subjects "
                          f'like "chat.*.*.*.message" (`*`, `>`; no `#`), not {json.dumps(s)}')
    return config


class JSONObject(dict):
    def __init__(self, pairs):  # remembers whether a key appeared twice (refused at an envelope's top level)
        super().__init__(pairs)
        self.repeated = len(self) != len(pairs)


def valid_timestamp(ts):
    m = RFC3339.fullmatch(ts) if isinstance(ts, str) else None
    try:  # the calendar check (year 0 is a leap year like 2000; second 60 is a leap second)
        datetime.datetime(int(m[1]) or 2000, int(m[2]), int(m[3]), int(m[4]), int(m[5]), min(int(m[6]), 59))
    except (TypeError, ValueError):
        return False
    return int(m[6]) <= 60 and int(m[7] or 0) <= 23 and int(m[8] or 0) <= 59

def parse_envelope(data):
    """Decode and validate an envelope (PROTOCOL.md, Validation, rules in order); ValueError says why."""
    if len(data) > 1048576:
        raise ValueError(f"envelope is {len(data)} bytes, over the 1048576-byte limit")
    env = json.loads(data.decode(), object_pairs_hook=JSONObject, parse_constant=int)  # int() refuses NaN, Infinity
    if not isinstance(env, dict) or env.repeated:
        raise ValueError(f"envelope must be a JSON object without repeated keys, but it is {kind(env)}")
    if not isinstance(env.get("source"), str) or not 0 < len(env["source"].encode()) <= 256:
        raise ValueError("envelope field `source` must be a non-empty string of at most 256 bytes")
    if not valid_timestamp(env.get("timestamp")):
        raise ValueError("envelope field `timestamp` must be an RFC 3339 date-time")
    headers = env.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) and 0 < len(k.encode()) <= 128
                                                for k, v in headers.items()):
        raise ValueError("envelope field `headers` must be an object of strings, names of 1-128 bytes")
    if "body" not in env:
        raise ValueError("envelope field `body` is missing")
    return env

def parse_control(data):
    """(verb, config) of a control request, or Refused("bad_request") worded like the Rust runtime."""
    try:
        req = json.loads(data)
    except ValueError as e:
        raise Refused("bad_request", f"control request is not valid JSON: {e}") from None
    verb, verbs = req.get("verb") if isinstance(req, dict) else None, ", ".join(VERBS)
    if not isinstance(req, dict):
        problem = f'must be a JSON object like {{"verb":"halt"}}, but it is {kind(req)}'
    elif "verb" not in req:
        problem = f'has no `verb` field; send e.g. {{"verb":"halt"}} (verbs: {verbs})'
    elif not isinstance(verb, str):
        problem = f"field `verb` must be a JSON string, but it is {kind(verb)}"
    elif verb not in VERBS:
        problem = f"has unknown control verb `{verb[:64]}`; valid verbs are {verbs}"
    elif verb == "reload" and "config" not in req:
        problem = '`reload` has no `config` field; send the complete new config, e.g. {"verb":"reload","config":{}}'
    else:
        return verb, req.get("config")
    raise Refused("bad_request", "control request " + problem)


class Echo:
    def __init__(self, nc, config):
        self.nc, self.config, self.subs, self.seen = nc, config, [], {}
        self.state, self.seq, self.started, self.exit_code = "starting", 0, time.monotonic(), 0
        self.counters = dict.fromkeys(("received", "published", "malformed", "duplicates", "dropped",
                                       "handler_errors", "reconnects", "disconnects"), 0)
        self.running = asyncio.Event()  # cleared while halted: deliveries wait in their subscription's queue
        self.lock = asyncio.Lock()      # one control action at a time (verbs, SIGHUP, shutdown)
        self.done = asyncio.Event()
        self.warned = float("-inf")

    async def publish(self, subject, payload):
        await self.nc.publish(subject, dumps(payload))
        self.counters["published"] += 1

    async def on_chat(self, msg):
        await self.running.wait()  # halted: this delivery (and those queued behind it) is held
        try:
            env = parse_envelope(msg.data)
        except ValueError as e:
            self.counters["malformed"] += 1
            if time.monotonic() - self.warned >= 10:  # at most one warning per 10 s
                self.warned = time.monotonic()
                log.warning("dropped a malformed envelope on %s (%d so far): %s", msg.subject,
                            self.counters["malformed"], e)
            return
        env_id = env.get("headers", {}).get("id")
        if env_id in self.seen:
            self.counters["duplicates"] += 1
            return
        if env_id is not None:
            self.seen[env_id] = None
            if len(self.seen) > 8192:
                del self.seen[next(iter(self.seen))]  # forget the oldest id
        self.counters["received"] += 1
        try:
            await self.answer(msg.subject, env)
        except Exception as e:  # one bad message must never stop the operator
            self.counters["handler_errors"] += 1
            log.warning("cannot answer the envelope on %s: %s", msg.subject, e)

    async def answer(self, subject, env):
        body, prefix, tokens = env["body"], self.config["prefix"], subject.split(".")
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in ("text", "sender", "room")):
            raise ValueError("body is not a chat message (string fields text, sender, room)")
        rest = body["text"][len(prefix):] if body["text"].startswith(prefix) else ""
        if not rest.strip():
            return
        if len(tokens) != 5 or tokens[0] != "chat":
            raise ValueError("not a chat subject chat.<protocol>.<instance>.<room>.<kind>")
        if tokens[4] == "notice":
            return  # notices are never answered automatically
        _, _, room, _ = (unescape_token(t) for t in tokens[1:])  # every token must be canonical
        headers = {"id": secrets.token_hex(11), "room": room}
        if "id" in env.get("headers", {}):
            headers["in-reply-to"] = env["headers"]["id"]
        await self.publish(".".join(["send", *tokens[1:4], "message"]),  # the same escaped tokens
                           {"source": ID, "timestamp": now(), "headers": headers, "body": {"text": rest}})

    async def start(self):  # subscribe per config
        for subject in self.config["listen"]:
            self.subs.append(await self.nc.subscribe(subject, cb=self.on_chat, pending_msgs_limit=65536))

    async def stop(self):  # drop the chat subscriptions, held deliveries with them
        subs, self.subs = self.subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # already drained or closed

    async def announce_ready(self):
        await self.nc.flush()  # PING/PONG: the server has our subscriptions before it routes ready
        await self.publish(f"sb.op.{ID}.ready", {"id": ID, "pid": os.getpid(), "protocol": 1,
                                                 "version": "0.1.0", "timestamp": now()})
        await self.nc.flush()

    async def heartbeat(self):  # the counters are a snapshot taken before this publish
        self.seq += 1
        await self.publish(f"sb.op.{ID}.heartbeat", {
            "id": ID, "pid": os.getpid(), "seq": self.seq, "state": self.state, "uptime_ms": int((time.monotonic() - self.started) * 1000),
            "counters": dict(self.counters), "timestamp": now()})

    async def beat(self, interval):  # the first one interval after ready; a late one is delayed, never doubled
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except Exception as e:
                log.warning("heartbeat not sent: %s", e)

    async def reload(self, config):
        new, old = check_config(config), self.config  # invalid_config: nothing changes
        await self.stop()
        self.config = new
        try:
            await self.start()
            await self.nc.flush()
        except Exception as e:  # half set up: restart in place with the previous config
            self.config = old
            await self.restart()
            raise Refused("handler_failed", f"reload failed, previous config restored: {e}") from None

    async def restart(self):  # in place: same process, seq and uptime go on; ready again
        self.state = "starting"
        self.running.clear()
        await self.stop()
        try:
            await self.start()
        except Exception as e:
            self.exit_code = 1  # this process cannot work: ack, then exit non-zero
            raise Refused("handler_failed", f"restart failed, exiting: {e}") from None
        self.state = "running"
        self.running.set()
        await self.announce_ready()

    async def control(self, verb, config=None):
        if verb == "halt" and self.state == "running":
            self.state = "halted"
            self.running.clear()
        elif verb == "resume" and self.state == "halted":
            self.state = "running"
            self.running.set()
        elif verb == "reload":
            await self.reload(config)
        elif verb == "restart":
            await self.restart()
        elif verb == "shutdown":
            self.state = "stopping"

    async def on_control(self, msg):
        verb = error = None
        async with self.lock:
            try:
                verb, config = parse_control(msg.data)
                await self.control(verb, config)
            except Exception as e:
                error = {"code": getattr(e, "code", "handler_failed"), "message": str(e)}
                log.warning("control %s refused: %s", verb or "request", e)
            ack = {"ok": not error, "id": ID, "verb": verb, "state": self.state, "error": error}
            ack = {k: v for k, v in ack.items() if v is not None}  # no `verb` for a bad request
            if msg.reply:  # a request without a reply subject is carried out, not answered
                await msg.respond(dumps(ack))
                self.counters["published"] += 1
                await self.nc.flush()
            if verb == "shutdown" or self.exit_code:
                self.done.set()

    async def on_sighup(self):  # reload with SWITCHBOARD_CONFIG_FILE, else with the current config
        config, path = self.config, env("SWITCHBOARD_CONFIG_FILE")
        try:
            if path:
                with open(path, encoding="utf-8") as f:
                    config = json.load(f)
        except (OSError, ValueError) as e:
            log.warning("SIGHUP: cannot read %s (%s); reloading the current config", path, e)
        async with self.lock:
            try:
                if self.state != "stopping":
                    await self.reload(config)
                    log.info("SIGHUP: config reloaded")
            except Exception as e:
                log.error("SIGHUP: reload failed, old config kept: %s", e)
            if self.exit_code:
                self.done.set()

    async def on_nats(self, event, error=None):  # nats-py callbacks; `closed` = gone for good: shut down
        if isinstance(error, nats.errors.SlowConsumerError):
            self.counters["dropped"] += 1  # a subscription's queue was full
        elif error:
            log.warning("nats: %s", error)
        elif event == "closed":
            self.done.set()
        else:
            self.counters[event] += 1


async def main():
    hb_ms = env("SWITCHBOARD_HEARTBEAT_MS", "5000")
    if not re.fullmatch(r"[0-9]+", hb_ms) or int(hb_ms) < 1:
        raise SystemExit("SWITCHBOARD_HEARTBEAT_MS must be a whole number of milliseconds, at least 1")
    if env("SWITCHBOARD_CONTROL", "nats") not in ("nats", "signals"):
        raise SystemExit("SWITCHBOARD_CONTROL must be `nats` or `signals`")
    try:  # never log the config itself: it may hold resolved secrets
        op = Echo(None, check_config(launch_config()))
    except (OSError, ValueError, Refused) as e:
        raise SystemExit(f"SWITCHBOARD_CONFIG(_FILE): {e}") from None
    for var in ("CREDS", "NKEY", "TLS_CERT", "TLS_KEY"):  # better refused than ignored (they need the nkeys package)
        if env("SWITCHBOARD_NATS_" + var):
            raise SystemExit(f"SWITCHBOARD_NATS_{var} is set, but this operator does not support it")
    try:
        auth = {k: v for k, v in [("user", env("SWITCHBOARD_NATS_USER")),
                                  ("password", secret("SWITCHBOARD_NATS_PASSWORD")),
                                  ("token", secret("SWITCHBOARD_NATS_TOKEN"))] if v}
    except OSError as e:  # names the file, never its contents
        raise SystemExit(f"cannot read a credentials file: {e}") from None
    if env("SWITCHBOARD_NATS_INBOX_PREFIX"):  # the server lets us subscribe to our own inboxes only
        auth["inbox_prefix"] = env("SWITCHBOARD_NATS_INBOX_PREFIX").encode()
    if env("SWITCHBOARD_NATS_TLS_CA"):  # TLS with the CA we are told to trust
        auth["tls"] = ssl.create_default_context(cafile=env("SWITCHBOARD_NATS_TLS_CA"))
    if ("user" in auth) != ("password" in auth):
        raise SystemExit("SWITCHBOARD_NATS_USER and SWITCHBOARD_NATS_PASSWORD must be set together")
    urls = [u.strip() for u in env("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222").split(",") if u.strip()]
    refused_until = time.monotonic() + 0.5  # a refusal during the server's user reload is retried briefly
    while True:
        try:  # the server may start after us: retry for 10 s, then reconnect forever once connected
            op.nc = await asyncio.wait_for(nats.connect(
                urls, name=ID, max_reconnect_attempts=-1, reconnect_time_wait=0.5, **auth,
                error_cb=partial(op.on_nats, "error"), disconnected_cb=partial(op.on_nats, "disconnects"),
                reconnected_cb=partial(op.on_nats, "reconnects"), closed_cb=partial(op.on_nats, "closed")), 10)
            break
        except asyncio.TimeoutError:
            raise SystemExit(f"no NATS server accepted us within 10 s at {' '.join(urls)}") from None
        except Exception as e:
            if "authorization" not in str(e).lower() or time.monotonic() > refused_until:
                raise SystemExit(f"NATS at {' '.join(urls)} refused us: {e}") from None
            await asyncio.sleep(0.05)
    op.started = time.monotonic()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, op.done.set)
    await op.nc.subscribe(f"sb.ctl.{ID}", cb=op.on_control)
    await op.start()
    op.state = "running"
    op.running.set()
    await op.announce_ready()
    log.info("ready, listening on %s", " ".join(op.config["listen"]))
    tasks = {asyncio.ensure_future(op.beat(int(hb_ms) / 1000))}
    loop.add_signal_handler(signal.SIGHUP, lambda: tasks.add(asyncio.ensure_future(op.on_sighup())))
    await op.done.wait()
    async with op.lock:  # shutdown, after a control action in flight
        for task in tasks:
            task.cancel()
        if op.running.is_set():  # not halted: handle deliveries that already arrived, for at most 500 ms
            try:
                await asyncio.wait_for(asyncio.gather(*(s.drain() for s in op.subs)), 0.5)
            except (asyncio.TimeoutError, nats.errors.Error):
                pass
        op.state = "stopping"
        await op.stop()
        try:
            await op.heartbeat()  # the final heartbeat, state "stopping"
            await asyncio.wait_for(op.nc.flush(), 1)
        except (asyncio.TimeoutError, nats.errors.Error) as e:
            log.warning("final heartbeat not flushed: %s", e)
        await op.nc.close()
    log.info("stopped")
    return op.exit_code


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=f"%(levelname)s {ID or 'echo'}: %(message)s")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", ID):
        log.error("SWITCHBOARD_ID must be 1-64 characters of A-Z a-z 0-9 _ - (got %r)", ID)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(main()))
    except SystemExit as e:
        if isinstance(e.code, str):  # a startup error that names its variable: log it, exit 1
            log.error("%s", e.code)
            sys.exit(1)
        raise
