"""The real-network check of the Bluesky operator (`make e2e-bluesky`).

Runs against a local ATProto network (@atproto/dev-env: PLC, PDS and
AppView on loopback) with `switchboard run` supervising the operator:

1. alice (the PyPI `atproto` client, independent of the operator) posts a
   mention of the bot, with a mention facet;
2. the mention must arrive on the bus (chat.bluesky.<instance>.<root>.mention);
3. a reply request goes back on send.bluesky.<instance>.<root>.message,
   answering that event (in-reply-to), with emoji, a mention and a link;
4. alice reads the thread back through the AppView and checks the reply's
   refs (root and parent = her post, with CIDs) and facets (UTF-8 byte
   offsets, the mentioned DID, the link).

Environment: E2E_INFO (JSON from network.mjs), NATS_URL, E2E_INSTANCE.
"""

import asyncio
import datetime
import json
import os
import secrets
import sys
import time

import nats
from atproto import Client, client_utils


def now():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fail(message):
    print(f"e2e-bluesky: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def facet_bytes(text, facet):
    raw = text.encode("utf-8")
    return raw[facet.index.byte_start:facet.index.byte_end].decode("utf-8")


async def main():
    info = json.loads(os.environ["E2E_INFO"])
    instance = os.environ["E2E_INSTANCE"]
    nc = await nats.connect(os.environ["NATS_URL"])
    sub = await nc.subscribe(f"chat.bluesky.{instance}.>")

    alice = Client(base_url=info["pds"])
    alice.login(info["alice"]["handle"], info["alice"]["password"])
    text = client_utils.TextBuilder().mention(f"@{info['bot']['handle']}", info["bot"]["did"]).text(" ping ✨")
    post = alice.send_post(text)
    print(f"e2e-bluesky: alice posted {post.uri}", file=sys.stderr)

    deadline = time.time() + 90
    while True:
        left = deadline - time.time()
        if left <= 0:
            fail("the mention never arrived on the bus")
        try:
            msg = await sub.next_msg(timeout=left)
        except nats.errors.TimeoutError:
            continue
        env = json.loads(msg.data)
        if env["body"].get("uri") == post.uri:
            break
    tokens = msg.subject.split(".")
    if tokens[-1] != "mention":
        fail(f"the mention arrived as {msg.subject}")
    if env["body"]["room"] != post.uri or env["body"]["author"]["did"] != alice.me.did:
        fail(f"unexpected body {env['body']}")
    print(f"e2e-bluesky: on the bus: {msg.subject}", file=sys.stderr)

    answer = f"pong 👋🏽 @{info['alice']['handle']} see https://example.com/a?b=1 ✨"
    request = {
        "source": "e2e-driver",
        "timestamp": now(),
        "headers": {"id": secrets.token_hex(11), "in-reply-to": env["headers"]["id"], "room": env["headers"]["room"]},
        "body": {"text": answer},
    }
    subject = ".".join(["send", *tokens[1:4], "message"])
    reply = await nc.request(subject, json.dumps(request).encode(), timeout=60)
    ack = json.loads(reply.data)
    if not ack.get("ok"):
        fail(f"the reply request was refused: {ack}")
    print(f"e2e-bluesky: replied {ack['uri']}", file=sys.stderr)

    found = None
    deadline = time.time() + 60
    while found is None and time.time() < deadline:
        thread = alice.get_post_thread(post.uri).thread
        for r in thread.replies or []:
            if r.post.uri == ack["uri"]:
                found = r.post
        if found is None:
            await asyncio.sleep(0.5)
    if found is None:
        fail("the reply never showed in the thread")
    record = found.record
    if found.cid != ack["cid"]:
        fail(f"cid {found.cid} != ack {ack['cid']}")
    if record.text != answer:
        fail(f"text {record.text!r}")
    for ref in (record.reply.root, record.reply.parent):
        if (ref.uri, ref.cid) != (post.uri, post.cid):
            fail(f"reply ref {ref} is not alice's post {post.uri} {post.cid}")
    facets = sorted(record.facets or [], key=lambda f: f.index.byte_start)
    if len(facets) != 2:
        fail(f"facets {facets}")
    if facet_bytes(answer, facets[0]) != f"@{info['alice']['handle']}" or facets[0].features[0].did != alice.me.did:
        fail(f"mention facet {facets[0]}")
    if facet_bytes(answer, facets[1]) != "https://example.com/a?b=1" or facets[1].features[0].uri != "https://example.com/a?b=1":
        fail(f"link facet {facets[1]}")
    print("e2e-bluesky: PASSED (mention on the bus, reply in the thread with correct refs and facets)", file=sys.stderr)
    await nc.close()


asyncio.run(main())
