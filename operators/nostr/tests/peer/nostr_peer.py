"""An independent Nostr client for the operator's tests.

Events are built, signed and verified with the PyPI `nostr-sdk` bindings;
the relays are spoken to over plain websockets (PyPI `websockets`), one
relay at a time, so a test decides exactly which relay gets what. Nothing
here is the operator's code. Installed by `make tools` into .tools/venv.

Usage (every answer is one JSON document on stdout):
  keygen
  sign SECRET CONTENT                           -> a signed note, not sent
  publish RELAYS SECRET CONTENT [TAGS_JSON]     -> {"id", "event", "ok": {url: [accepted, message]}}
  badsig RELAYS SECRET CONTENT                  -> the same, with the signature of another event
  fetch RELAY FILTER_JSON                       -> [{"event": ..., "valid": bool}] until EOSE
  bulk RELAYS SECRET N                          -> {"ids": [...], "seconds": s}: the same N notes to each relay, one connection each
  trickle RELAYS SECRET N EVERY_MS              -> [{"id", "accepted": [url...]}]: N notes, one every EVERY_MS, each to every relay on a
                                                   new connection; a relay that is down just does not accept it
  dm RELAYS SECRET RECEIVER TEXT SCHEME [REPLY_TO]
                                                -> a direct message to RECEIVER (npub or hex): SCHEME `nip17` (a kind-14 rumor,
                                                   sealed and gift-wrapped, NIP-59/NIP-44) or `nip04` (kind 4); the publish answer
                                                   plus "message_id" (the rumor's id for nip17)
  inbox RELAY SECRET                            -> [{"sender", "text", "kind", "scheme", "tags", "id"}]: every DM to SECRET's key on
                                                   RELAY, opened (gift wraps unwrapped and their seals checked, NIP-04 decrypted)
RELAYS is a comma-separated list of ws:// URLs.
"""

import asyncio
import json
import sys
import time

import websockets
from nostr_sdk import (
    Event,
    EventBuilder,
    Keys,
    Kind,
    PublicKey,
    Tag,
    UnwrappedGift,
    nip59_make_gift_wrap,
)


def build(secret, content, tags):
    keys = Keys.parse(secret)
    builder = EventBuilder(Kind(1), content).tags([Tag.parse(t) for t in tags])
    return builder.finalize(keys)


async def send_event(url, event_json):
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send(json.dumps(["EVENT", event_json]))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            # nostr-relay answers a refused write with an empty id.
            if msg[0] == "OK" and msg[1] in (event_json["id"], ""):
                return [msg[2], msg[3]]


async def publish(relays, event_json):
    results = {}
    for url in relays.split(","):
        results[url] = await send_event(url, event_json)
    return {"id": event_json["id"], "event": event_json, "ok": results}


async def fetch(url, flt):
    out = []
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send(json.dumps(["REQ", "peer", flt]))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg[0] == "EVENT":
                valid = Event.from_json(json.dumps(msg[2])).verify()
                out.append({"event": msg[2], "valid": valid})
            elif msg[0] == "EOSE":
                return out


async def bulk(relays, secret, n):
    events = [json.loads(build(secret, f"bulk {i}", []).as_json()) for i in range(n)]
    start = time.monotonic()
    for url in relays.split(","):
        async with websockets.connect(url, open_timeout=10) as ws:
            for e in events:
                await ws.send(json.dumps(["EVENT", e]))
            acked = 0
            while acked < n:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if msg[0] == "OK":
                    acked += 1
    return {"ids": [e["id"] for e in events], "seconds": time.monotonic() - start}


async def trickle(relays, secret, n, every_ms):
    out = []
    for i in range(n):
        event = json.loads(build(secret, f"trickle {i}", []).as_json())
        accepted = []
        for url in relays.split(","):
            try:
                ok = await send_event(url, event)
                if ok[0]:
                    accepted.append(url)
            except Exception:
                pass
        out.append({"id": event["id"], "accepted": accepted})
        await asyncio.sleep(every_ms / 1000)
    return out


def dm(relays, secret, receiver, text, scheme, reply_to):
    keys = Keys.parse(secret)
    to = PublicKey.parse(receiver)
    tags = [Tag.parse(["p", to.to_hex()])]
    if reply_to:
        tags.append(Tag.parse(["e", reply_to]))
    if scheme == "nip04":
        content = keys.nip04_encrypt(to, text)
        event = EventBuilder(Kind(4), content).tags(tags).finalize(keys)
        message_id = event.id().to_hex()
    elif scheme == "nip17":
        rumor = EventBuilder(Kind(14), text).tags(tags).finalize_unsigned(keys.public_key())
        rumor = rumor.ensure_id()
        message_id = rumor.id().to_hex()
        event = nip59_make_gift_wrap(keys, to, rumor)
    else:
        raise SystemExit(f"unknown scheme {scheme}")
    out = asyncio.run(publish(relays, json.loads(event.as_json())))
    out["message_id"] = message_id
    return out


def inbox(url, secret):
    keys = Keys.parse(secret)
    me = keys.public_key().to_hex()
    flt = {"kinds": [4, 1059], "#p": [me]}
    out = []
    for item in asyncio.run(fetch(url, flt)):
        event = Event.from_json(json.dumps(item["event"]))
        if not item["valid"]:
            continue
        if event.kind().as_u16() == 1059:
            gift = UnwrappedGift.from_gift_wrap(keys, event)
            rumor = gift.rumor()
            out.append({
                "sender": gift.sender().to_bech32(),
                "text": rumor.content(),
                "kind": rumor.kind().as_u16(),
                "scheme": "nip17",
                "tags": [t.to_vec() for t in rumor.tags()],
                "id": rumor.id().to_hex() if rumor.id() else None,
            })
        else:
            out.append({
                "sender": event.author().to_bech32(),
                "text": keys.nip04_decrypt(event.author(), event.content()),
                "kind": 4,
                "scheme": "nip04",
                "tags": [t.to_vec() for t in event.tags()],
                "id": event.id().to_hex(),
            })
    return out


def main(argv):
    cmd = argv[1]
    if cmd == "keygen":
        keys = Keys.generate()
        return {
            "secret": keys.secret_key().to_hex(),
            "pubkey": keys.public_key().to_hex(),
            "npub": keys.public_key().to_bech32(),
        }
    if cmd == "sign":
        return json.loads(build(argv[2], argv[3], []).as_json())
    if cmd == "publish":
        tags = json.loads(argv[5]) if len(argv) > 5 else []
        event = json.loads(build(argv[3], argv[4], tags).as_json())
        return asyncio.run(publish(argv[2], event))
    if cmd == "badsig":
        event = json.loads(build(argv[3], argv[4], []).as_json())
        other = json.loads(build(argv[3], argv[4] + " (other)", []).as_json())
        # A well-formed event whose signature belongs to another event.
        event["sig"] = other["sig"]
        assert not Event.from_json(json.dumps(event)).verify()
        return asyncio.run(publish(argv[2], event))
    if cmd == "trickle":
        return asyncio.run(trickle(argv[2], argv[3], int(argv[4]), int(argv[5])))
    if cmd == "bulk":
        return asyncio.run(bulk(argv[2], argv[3], int(argv[4])))
    if cmd == "dm":
        reply_to = argv[7] if len(argv) > 7 else None
        return dm(argv[2], argv[3], argv[4], argv[5], argv[6], reply_to)
    if cmd == "inbox":
        return inbox(argv[2], argv[3])
    if cmd == "fetch":
        return asyncio.run(fetch(argv[2], json.loads(argv[3])))
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv)))
