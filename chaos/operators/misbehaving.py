"""An operator that breaks the lifecycle contract on purpose, for the fault
suite: it announces itself correctly and keeps valid heartbeats going, but
also publishes malformed ones on its heartbeat subject and never answers a
control request. The daemon must count the garbage, keep it running on its
valid heartbeats, answer `ctl` with a timeout error instead of hanging, and
still be able to restart it.
"""

import asyncio
import json
import os
from datetime import datetime, timezone

import nats


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def secret(var):
    """A secret from the file `<var>_FILE` names (what the daemon sets), else `<var>`."""
    path = os.environ.get(var + "_FILE")
    if path:
        with open(path) as f:
            return f.read().removesuffix("\n")
    return os.environ.get(var)


async def main():
    op = os.environ["SWITCHBOARD_ID"]
    nc = await nats.connect(
        os.environ.get("SWITCHBOARD_NATS_URL") or "nats://127.0.0.1:4222",
        user=os.environ.get("SWITCHBOARD_NATS_USER"),
        password=secret("SWITCHBOARD_NATS_PASSWORD"),
        inbox_prefix=(os.environ.get("SWITCHBOARD_NATS_INBOX_PREFIX") or "_INBOX").encode(),
    )

    async def ignore(msg):
        pass  # control requests: never answered

    await nc.subscribe(f"sb.ctl.{op}", cb=ignore)
    await nc.publish(
        f"sb.op.{op}.ready",
        json.dumps({"id": op, "pid": os.getpid(), "protocol": 1, "version": "misbehaving",
                    "timestamp": now()}).encode(),
    )
    interval = int(os.environ.get("SWITCHBOARD_HEARTBEAT_MS") or "5000") / 1000
    garbage = [b"not json", b"[1,2,3]", b'{"id":"x"}', b'{"pid":"seven"}', b""]
    seq = 0
    while True:
        seq += 1
        beat = {"id": op, "pid": os.getpid(), "seq": seq, "state": "running",
                "uptime_ms": seq, "timestamp": now()}
        await nc.publish(f"sb.op.{op}.heartbeat", json.dumps(beat).encode())
        await nc.publish(f"sb.op.{op}.heartbeat", garbage[seq % len(garbage)])
        await nc.flush()
        await asyncio.sleep(interval)


asyncio.run(main())
