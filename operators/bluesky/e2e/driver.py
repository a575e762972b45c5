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
   offsets, the mentioned DID, the link);
5. the second operator instance (E2E_HOSE_INSTANCE, `strategy =
   "firehose"` on the PDS's own subscribeRepos, signatures checked against
   the dev-env PLC) published the same mention, then alice's like of the
   bot's reply (in her thread) and her follow of the bot.

With E2E_RECORD set to a directory, the PDS's frames from the start
(`subscribeRepos?cursor=0`) and both accounts' DID documents are written
there: the recorded fixtures of tests/firehose_frames.rs.

Environment: E2E_INFO (JSON from network.mjs), NATS_URL, E2E_INSTANCE,
E2E_HOSE_INSTANCE.
"""

import asyncio
import datetime
import json
import os
import re
import secrets
import sys
import time

import urllib.request

import nats
import websockets.sync.client
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
    hose_instance = os.environ["E2E_HOSE_INSTANCE"]
    nc = await nats.connect(os.environ["NATS_URL"])
    sub = await nc.subscribe(f"chat.bluesky.{instance}.>")
    hose = await nc.subscribe(f"chat.bluesky.{hose_instance}.>")

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

    # The firehose instance: the mention, then a like of the bot's reply
    # and a follow, each from the PDS's own subscribeRepos, verified.
    like = alice.like(ack["uri"], ack["cid"])
    follow = alice.follow(info["bot"]["did"])
    wanted = {post.uri: "mention", like.uri: "like", follow.uri: "follow"}
    seen = {}
    deadline = time.time() + 60
    while len(seen) < len(wanted):
        left = deadline - time.time()
        if left <= 0:
            fail(f"the firehose instance published only {seen} of {wanted}")
        try:
            msg = await hose.next_msg(timeout=left)
        except nats.errors.TimeoutError:
            continue
        body = json.loads(msg.data)["body"]
        if body.get("uri") in wanted:
            seen[body["uri"]] = (msg.subject.split(".")[-1], body)
    for uri, kind in wanted.items():
        got, body = seen[uri]
        if got != kind or body["via"] != "firehose" or body["author"]["did"] != alice.me.did:
            fail(f"firehose event for {uri}: {got} {body}")
    if seen[like.uri][1]["room"] != post.uri or seen[like.uri][1]["subject"] != ack["uri"]:
        fail(f"the like is not in alice's thread: {seen[like.uri][1]}")
    if seen[follow.uri][1]["room"] != alice.me.did:
        fail(f"the follow's room: {seen[follow.uri][1]}")
    print(f"e2e-bluesky: firehose: mention, like and follow on the bus (seq {[b['seq'] for _, b in seen.values()]})", file=sys.stderr)

    if os.environ.get("E2E_RECORD"):
        record_fixtures(info, os.environ["E2E_RECORD"])
    print("e2e-bluesky: PASSED (mention on the bus, reply in the thread with correct refs and facets, firehose events verified)", file=sys.stderr)
    await nc.close()


def record_fixtures(info, out):
    """The PDS's frames since its start and the DID documents, as files."""
    os.makedirs(out, exist_ok=True)
    url = info["pds"].replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
    n = 0
    dids = set()
    with websockets.sync.client.connect(url, max_size=None) as ws:
        while True:
            try:
                frame = ws.recv(timeout=2)
            except TimeoutError:
                break
            n += 1
            with open(os.path.join(out, f"frame-{n:03}.bin"), "wb") as f:
                f.write(frame)
            dids.update(d.decode() for d in re.findall(rb"did:plc:[a-z2-7]{24}", frame))
    # Every repository's document (dev-env's service accounts commit too).
    for did in sorted(dids):
        with urllib.request.urlopen(f"{info['plc']}/{did}") as r:
            doc = json.load(r)
        with open(os.path.join(out, f"{did.replace(':', '_')}.did.json"), "w") as f:
            json.dump(doc, f, indent=1)
    with open(os.path.join(out, "accounts.json"), "w") as f:
        json.dump({who: info[who]["did"] for who in ("bot", "alice")}, f, indent=1)
    print(f"e2e-bluesky: recorded {n} frames and {len(dids)} DID documents into {out}", file=sys.stderr)


asyncio.run(main())
