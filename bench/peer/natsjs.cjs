// The nats.js peer of `make bench`: the same envelopes, the same server,
// the same flow control as the bus's throughput run, through the client
// most NATS chat-bot frameworks in TypeScript/JavaScript use (npm `nats`,
// nats.js v2) with JSON.stringify / JSON.parse, as such a bot would.
//
// Usage: node natsjs.cjs <nats-module-dir> <url> <subject> <body-bytes> <messages> <window>
// Prints one JSON line: {"sent":..,"received":..,"elapsed_ns":..,"cpu_ns":..,"wire_bytes":..,"version":..}
//
// The publisher builds each envelope as an object with a fresh id and
// encodes it (JSON.stringify + UTF-8), as the bus publisher encodes each
// envelope; the subscriber decodes each payload (UTF-8 + JSON.parse) and
// looks at its body, as the bus subscriber does. The subscriber uses a
// callback rather than the async iterator: the faster of nats.js's two
// ways, so the comparison is against the peer at its best.
"use strict";

const [moduleDir, url, subject, bodyArg, messagesArg, windowArg] = process.argv.slice(2);
if (!windowArg) {
  console.error("usage: natsjs.cjs <nats-module-dir> <url> <subject> <body-bytes> <messages> <window>");
  process.exit(2);
}
const nats = require(moduleDir);
const version = require(`${moduleDir}/package.json`).version;
const bodyBytes = Number(bodyArg);
const messages = Number(messagesArg);
const windowSize = Number(windowArg);

// The same body as the Rust bench: ASCII filler whose JSON string encoding
// (quotes included) is exactly bodyBytes long.
const FILLER = "the quick brown fox jumps over the lazy dog ";
let text = "";
while (text.length < bodyBytes - 2) text += FILLER;
text = text.slice(0, bodyBytes - 2);

// An id of the bus's length (22 characters): a random prefix and a counter.
const prefix = Math.random().toString(36).slice(2, 12).padEnd(10, "x");
const id = (n) => prefix + String(n).padStart(12, "0");
const timestamp = new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

function envelope(n) {
  return { source: "irc-libera", timestamp, headers: { id: id(n), room: "#bench" }, body: text };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

async function main() {
  const sub = await nats.connect({ servers: url, name: "bench-natsjs-sub" });
  const pub = await nats.connect({ servers: url, name: "bench-natsjs-pub" });
  const wireBytes = enc.encode(JSON.stringify(envelope(0))).length;

  let received = 0;
  let checksum = 0;
  let target = messages;
  let lastArrival = 0n;
  let wake = null;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  sub.subscribe(subject, {
    callback: (err, m) => {
      if (err) return;
      const env = JSON.parse(dec.decode(m.data));
      if (typeof env.body === "string") checksum += env.body.length;
      received += 1;
      if (received % 1024 === 0 || received >= target) {
        lastArrival = process.hrtime.bigint();
        if (wake) {
          const w = wake;
          wake = null;
          w();
        }
      }
      if (received >= target) done();
    },
  });
  await sub.flush(); // the subscription reached the server

  const cpuBefore = process.cpuUsage();
  const start = process.hrtime.bigint();
  let sent = 0;
  while (sent < messages) {
    if (windowSize > 0 && sent - received >= windowSize) {
      await new Promise((resolve) => (wake = resolve));
      continue;
    }
    pub.publish(subject, enc.encode(JSON.stringify(envelope(sent))));
    sent += 1;
    // Let the socket and the subscriber run now and then, as a bot's
    // event loop would.
    if (sent % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  target = sent;
  const stall = setTimeout(() => done(), 5000);
  await finished;
  clearTimeout(stall);
  const cpu = process.cpuUsage(cpuBefore);
  console.log(
    JSON.stringify({
      sent,
      received,
      elapsed_ns: Number(lastArrival - start),
      cpu_ns: (cpu.user + cpu.system) * 1000,
      wire_bytes: wireBytes,
      version,
      checksum,
    }),
  );
  await pub.close();
  await sub.close();
}

main().catch((e) => {
  console.error(`natsjs peer failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
