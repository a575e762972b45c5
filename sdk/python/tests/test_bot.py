"""The runtime against a real nats-server: what an operator owes the daemon, driven as the daemon does."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from typing import Any, Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from conftest import PASSWORD, ROOT, Server
from switchboard import Bot, Launch, Message, make_envelope

WAIT = 5.0
ROOM = "chat.irc.libera.=23rust.message"
REPLY = "send.irc.libera.=23rust.message"


def echo_bot() -> Bot:
    bot = Bot(config={"prefix": "!echo "})

    @bot.command(r"^!(\w+) (.+)")
    async def echo(msg: Message) -> str | None:
        _, text = msg.args
        return text if msg.text.startswith(msg.bot.config["prefix"]) else None

    return bot


class Driver:
    """The test's side: the daemon's view of the bus."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.ready: Subscription
        self.beats: Subscription
        self.replies: Subscription

    async def ctl(self, payload: Any) -> dict[str, Any]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        msg = await self.nc.request("sb.ctl.bot", data, timeout=WAIT)
        ack: dict[str, Any] = json.loads(msg.data)
        return ack

    async def say(self, text: str, ident: str | None = None) -> None:
        headers = {"room": "#rust", **({"id": ident} if ident else {})}
        body = {"text": text, "sender": "ferris", "room": "#rust", "private": False}
        env = json.loads(make_envelope("libera", body, headers))
        if ident is None:
            del env["headers"]["id"]
        await self.nc.publish(ROOM, json.dumps(env).encode())

    async def reply(self, within: float = WAIT) -> dict[str, Any]:
        msg = await self.replies.next_msg(timeout=within)
        assert msg.subject == REPLY
        env: dict[str, Any] = json.loads(msg.data)
        return env

    async def beat(self, state: str | None = None) -> dict[str, Any]:
        """The next heartbeat (in `state`, skipping older ones)."""
        while True:
            b: dict[str, Any] = json.loads((await self.beats.next_msg(timeout=WAIT)).data)
            if state is None or b["state"] == state:
                return b


def run(server: Server, bot: Bot, test: Callable[[Driver], Awaitable[None]], **env: str) -> int:
    """Start `bot` in this process, wait for its ready, run `test`, shut it down; the exit code."""

    async def main() -> int:
        nc = await nats.connect(server.url, user="drv", password="drvpw")
        d = Driver(nc)
        d.ready = await nc.subscribe("sb.op.bot.ready")
        d.beats = await nc.subscribe("sb.op.bot.heartbeat")
        d.replies = await nc.subscribe("send.>")
        task = asyncio.create_task(bot.main(Launch.from_env(server.env(**env))))
        try:
            ready = json.loads((await d.ready.next_msg(timeout=WAIT)).data)
            assert ready["id"] == "bot" and ready["pid"] == os.getpid() and ready["protocol"] == 1
            await test(d)
            if not task.done():
                ack = await d.ctl({"verb": "shutdown"})
                assert ack == {"ok": True, "id": "bot", "verb": "shutdown", "state": "stopping"}
                assert (await d.beat("stopping"))["state"] == "stopping"
            return await asyncio.wait_for(task, WAIT)
        finally:
            task.cancel()
            await nc.close()

    return asyncio.run(main())


def test_answers_in_the_room_with_the_reply_headers(server: Server) -> None:
    async def test(d: Driver) -> None:
        await d.say("!echo hello world", ident="abc123")
        env = await d.reply()
        assert env["source"] == "bot"
        assert env["body"] == {"text": "hello world"}
        assert env["headers"]["in-reply-to"] == "abc123"
        assert env["headers"]["room"] == "#rust"
        assert len(env["headers"]["id"]) == 22
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", env["timestamp"])

    assert run(server, echo_bot(), test) == 0


def test_halt_holds_chat_and_resume_hands_it_over(server: Server) -> None:
    async def test(d: Driver) -> None:
        assert await d.ctl({"verb": "halt"}) == {"ok": True, "id": "bot", "verb": "halt", "state": "halted"}
        assert (await d.beat("halted"))["state"] == "halted"
        await d.say("!echo held 1", ident="h1")
        await d.say("!echo held 2", ident="h2")
        try:
            early = await d.reply(within=0.5)
            raise AssertionError(f"answered while halted: {early}")
        except nats.errors.TimeoutError:
            pass
        assert (await d.ctl({"verb": "resume"}))["state"] == "running"
        assert [(await d.reply())["body"]["text"] for _ in range(2)] == ["held 1", "held 2"]

    assert run(server, echo_bot(), test) == 0


def test_every_verb_is_acked_as_the_protocol_says(server: Server) -> None:
    async def test(d: Driver) -> None:
        for bad in [b"not json", b"[]", b"{}", b'{"verb":"pause"}', b'{"verb":"reload"}']:
            ack = await d.ctl(bad)
            assert ack["ok"] is False and ack["error"]["code"] == "bad_request" and "verb" not in ack, ack
        ack = await d.ctl({"verb": "reload", "config": {"prefx": "!x "}})
        assert ack["error"]["code"] == "invalid_config" and "`prefx`" in ack["error"]["message"], ack
        ack = await d.ctl({"verb": "reload", "config": {"prefix": 7}})
        assert ack["error"] == {"code": "invalid_config", "message": "config key `prefix` must be a string"}
        ack = await d.ctl({"verb": "reload", "config": {"prefix": "!say "}})
        assert ack == {"ok": True, "id": "bot", "verb": "reload", "state": "running"}
        await d.say("!echo not any more")
        await d.say("!say the new prefix")
        assert (await d.reply())["body"]["text"] == "the new prefix"
        assert (await d.ctl({"verb": "restart"}))["state"] == "running"
        again = json.loads((await d.ready.next_msg(timeout=WAIT)).data)
        assert again["pid"] == os.getpid()
        b1, b2 = await d.beat(), await d.beat()
        assert b2["seq"] == b1["seq"] + 1 and b2["uptime_ms"] >= b1["uptime_ms"]

    assert run(server, echo_bot(), test) == 0


def test_malformed_and_repeated_envelopes_are_counted_not_fatal(server: Server) -> None:
    async def test(d: Driver) -> None:
        for garbage in [b"", b"not json", b"[]", b'{"source":"x"}', b'{"source":"x","timestamp":"yesterday","body":1}']:
            await d.nc.publish(ROOM, garbage)
        await d.say("!echo once", ident="same")
        await d.say("!echo once", ident="same")
        assert (await d.reply())["body"]["text"] == "once"
        await asyncio.sleep(0.3)
        counters = (await d.beat())["counters"]
        assert counters["malformed"] == 5 and counters["duplicates"] == 1 and counters["received"] == 1, counters

    assert run(server, echo_bot(), test) == 0


def test_a_forged_chat_event_is_dropped_and_counted(server: Server) -> None:
    """docs/PROTOCOL.md, "Authentic source": on chat.irc.libera.… only `libera` may be the source."""
    async def test(d: Driver) -> None:
        body = {"text": "!echo forged", "sender": "ferris", "room": "#rust", "private": False}
        await d.nc.publish(ROOM, make_envelope("pingbot", body, {"room": "#rust"}))
        await d.nc.publish("chat.irc.lib=2Era.=23rust.message", make_envelope("lib=2Era", body, {"room": "#rust"}))
        await d.say("!echo genuine")
        assert (await d.reply())["body"]["text"] == "genuine"
        await asyncio.sleep(0.3)
        counters = (await d.beat())["counters"]
        assert counters["forged"] == 2 and counters["received"] == 1, counters

    assert run(server, echo_bot(), test) == 0


def test_a_subscription_outside_the_grants_reports_health_failed(narrow_server: Server) -> None:
    async def test(d: Driver) -> None:
        b = await d.beat()
        assert b["health"] == "failed", b
        assert "chat.*.*.*.message" in b["health_reason"] and "`subscribe`" in b["health_reason"], b
        # Listening only where it may: healthy again.
        ack = await d.ctl({"verb": "reload", "config": {"listen": ["chat.irc.>"]}})
        assert ack["ok"], ack
        # A heartbeat already on its way when the reload was acked may still
        # say failed; one of the next few must not.
        for _ in range(5):
            b = await d.beat()
            if "health" not in b:
                break
        assert "health" not in b, b

    assert run(narrow_server, echo_bot(), test) == 0


def test_the_dice_bot_answers_logs_json_and_stops_on_sigterm(server: Server) -> None:
    """operators/py-dice as the daemon runs it: its own process, SIGTERM to stop."""

    async def main() -> None:
        nc = await nats.connect(server.url, user="drv", password="drvpw")
        ready, beats, replies = [await nc.subscribe(s) for s in ("sb.op.bot.ready", "sb.op.bot.heartbeat", "send.>")]
        env = server.env(PYTHONPATH=str(ROOT / "sdk/python/src"), PATH=os.environ.get("PATH", ""))
        proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "operators/py-dice/dice.py")], env=env,
                                stderr=subprocess.PIPE, text=True)
        try:
            await ready.next_msg(timeout=WAIT)
            body = {"text": "!roll 3d6", "sender": "ferris", "room": "#rust"}
            await nc.publish(ROOM, make_envelope("libera", body))
            text = json.loads((await replies.next_msg(timeout=WAIT)).data)["body"]["text"]
            m = re.fullmatch(r"ferris rolled ([1-6]) \+ ([1-6]) \+ ([1-6]) = (\d+)", text)
            assert m and sum(map(int, m.groups()[:3])) == int(m[4]), text
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, WAIT) == 0
            states = []
            while True:
                try:
                    states.append(json.loads((await beats.next_msg(timeout=0.5)).data)["state"])
                except nats.errors.TimeoutError:
                    break
            assert states[-1:] == ["stopping"], states
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            await nc.close()
        stderr = proc.stderr.read() if proc.stderr else ""
        assert PASSWORD not in stderr
        lines = [json.loads(line) for line in stderr.splitlines()]
        assert [(x["level"], x["fields"]["message"]) for x in lines] == [("INFO", "ready"), ("INFO", "stopped")]
        assert lines[0]["span"] == {"id": "bot", "name": "operator"}

    asyncio.run(main())


def test_operator_counters_and_health_ride_the_heartbeat(server: Server) -> None:
    bot = Bot()

    @bot.command(r"^!count")
    def count(msg: Message) -> str:
        msg.bot.count("rolls")
        msg.bot.count("received")  # an SDK name: sent as op_received
        msg.bot.set_health("degraded", "the dice are loaded")
        return "counted"

    async def test(d: Driver) -> None:
        await d.say("!count")
        await d.say("!count")
        assert (await d.reply())["body"]["text"] == "counted"
        assert (await d.reply())["body"]["text"] == "counted"
        b = await d.beat()
        while b["counters"].get("rolls") != 2:
            b = await d.beat()
        assert b["counters"]["op_received"] == 2 and b["counters"]["received"] == 2, b
        assert (b["health"], b["health_reason"]) == ("degraded", "the dice are loaded")

    assert run(server, bot, test) == 0
