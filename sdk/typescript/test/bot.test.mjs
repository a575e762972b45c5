// The runtime against a real nats-server: what an operator owes the daemon, driven as the daemon does.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, symlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { connect } from "nats";
import { Bot, launchFromEnv, makeEnvelope } from "../dist/index.js";
import { PASSWORD, ROOT, startServer } from "./server.mjs";

const WAIT = 5000;
const ROOM = "chat.irc.libera.=23rust.message";
const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const dec = (m) => JSON.parse(new TextDecoder().decode(m.data));

function echoBot() {
  const bot = new Bot({ config: { prefix: "!echo " } });
  bot.command(/^!(\w+) (.+)/, async (msg) => (msg.text.startsWith(msg.bot.config.prefix) ? msg.args[1] : undefined));
  return bot;
}

/** The next message of an iterator subscription, or a failure after `within` ms. */
async function next(sub, within = WAIT) {
  const it = sub[Symbol.asyncIterator]();
  let timer;
  const timeout = new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`nothing on ${sub.getSubject()}`)), within)));
  try {
    const r = await Promise.race([it.next(), timeout]);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

/** A queue over a subscription, so a timed-out wait loses no message. */
function queue(nc, subject) {
  const items = [];
  const waiters = [];
  nc.subscribe(subject, { callback: (_e, m) => (waiters.length ? waiters.shift()(m) : items.push(m)) });
  return {
    next(within = WAIT) {
      if (items.length) return Promise.resolve(items.shift());
      return new Promise((res, rej) => {
        const timer = setTimeout(() => { waiters.splice(waiters.indexOf(done), 1); rej(new Error(`nothing on ${subject}`)); }, within);
        const done = (m) => { clearTimeout(timer); res(m); };
        waiters.push(done);
      });
    },
  };
}

async function withBot(server, bot, body) {
  const nc = await connect({ servers: server.url, user: "drv", pass: "drvpw" });
  const d = {
    nc,
    ready: queue(nc, "sb.op.bot.ready"),
    beats: queue(nc, "sb.op.bot.heartbeat"),
    replies: queue(nc, "send.>"),
    async ctl(payload) {
      const data = payload instanceof Uint8Array ? payload : enc(payload);
      return dec(await nc.request("sb.ctl.bot", data, { timeout: WAIT }));
    },
    say(text, id) {
      const headers = { room: "#rust", ...(id ? { id } : {}) };
      const env = JSON.parse(new TextDecoder().decode(makeEnvelope("libera", { text, sender: "ferris", room: "#rust" }, headers)));
      if (!id) delete env.headers.id;
      nc.publish(ROOM, enc(env));
    },
    async reply(within) {
      const m = await this.replies.next(within);
      assert.equal(m.subject, "send.irc.libera.=23rust.message");
      return dec(m);
    },
    async beat(state) {
      for (;;) {
        const b = dec(await this.beats.next());
        if (!state || b.state === state) return b;
      }
    },
  };
  await nc.flush();
  const running = bot.main(launchFromEnv(server.env()));
  try {
    const ready = dec(await d.ready.next());
    assert.deepEqual([ready.id, ready.pid, ready.protocol], ["bot", process.pid, 1]);
    await body(d);
    assert.deepEqual(await d.ctl({ verb: "shutdown" }), { ok: true, id: "bot", verb: "shutdown", state: "stopping" });
    assert.equal((await d.beat("stopping")).state, "stopping");
    assert.equal(await running, 0);
  } finally {
    await nc.close();
  }
}

test("answers in the room with the reply headers", async () => {
  const server = await startServer();
  try {
    await withBot(server, echoBot(), async (d) => {
      d.say("!echo hello world", "abc123");
      const env = await d.reply();
      assert.equal(env.source, "bot");
      assert.deepEqual(env.body, { text: "hello world" });
      assert.equal(env.headers["in-reply-to"], "abc123");
      assert.equal(env.headers.room, "#rust");
      assert.equal(env.headers.id.length, 22);
      assert.match(env.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    });
  } finally {
    await server.stop();
  }
});

test("halt holds chat and resume hands it over", async () => {
  const server = await startServer();
  try {
    await withBot(server, echoBot(), async (d) => {
      assert.deepEqual(await d.ctl({ verb: "halt" }), { ok: true, id: "bot", verb: "halt", state: "halted" });
      assert.equal((await d.beat("halted")).state, "halted");
      d.say("!echo held 1", "h1");
      d.say("!echo held 2", "h2");
      await assert.rejects(d.reply(500), /nothing on/);
      assert.equal((await d.ctl({ verb: "resume" })).state, "running");
      assert.deepEqual([(await d.reply()).body.text, (await d.reply()).body.text], ["held 1", "held 2"]);
    });
  } finally {
    await server.stop();
  }
});

test("every verb is acked as the protocol says", async () => {
  const server = await startServer();
  try {
    await withBot(server, echoBot(), async (d) => {
      for (const bad of ["not json", "[]", "{}", '{"verb":"pause"}', '{"verb":"reload"}']) {
        const ack = await d.ctl(new TextEncoder().encode(bad));
        assert.equal(ack.ok, false, bad);
        assert.equal(ack.error.code, "bad_request", bad);
        assert.equal("verb" in ack, false, bad);
      }
      let ack = await d.ctl({ verb: "reload", config: { prefx: "!x " } });
      assert.equal(ack.error.code, "invalid_config");
      assert.match(ack.error.message, /`prefx`/);
      ack = await d.ctl({ verb: "reload", config: { prefix: 7 } });
      assert.deepEqual(ack.error, { code: "invalid_config", message: "config key `prefix` must be a string" });
      ack = await d.ctl({ verb: "reload", config: { prefix: "!say " } });
      assert.deepEqual(ack, { ok: true, id: "bot", verb: "reload", state: "running" });
      d.say("!echo not any more");
      d.say("!say the new prefix");
      assert.equal((await d.reply()).body.text, "the new prefix");
      assert.equal((await d.ctl({ verb: "restart" })).state, "running");
      assert.equal(dec(await d.ready.next()).pid, process.pid);
      const b1 = await d.beat();
      const b2 = await d.beat();
      assert.equal(b2.seq, b1.seq + 1);
      assert.ok(b2.uptime_ms >= b1.uptime_ms);
    });
  } finally {
    await server.stop();
  }
});

test("malformed and repeated envelopes are counted, not fatal", async () => {
  const server = await startServer();
  try {
    await withBot(server, echoBot(), async (d) => {
      for (const g of ["", "not json", "[]", '{"source":"x"}', '{"source":"x","timestamp":"yesterday","body":1}',
        '{"source":"a","source":"b","timestamp":"2024-05-01T12:00:00Z","body":1}']) {
        d.nc.publish(ROOM, new TextEncoder().encode(g));
      }
      d.say("!echo once", "same");
      d.say("!echo once", "same");
      assert.equal((await d.reply()).body.text, "once");
      await new Promise((r) => setTimeout(r, 300));
      const { counters } = await d.beat();
      assert.deepEqual([counters.malformed, counters.duplicates, counters.received], [6, 1, 1]);
    });
  } finally {
    await server.stop();
  }
});

test("a forged chat event is dropped and counted (PROTOCOL.md, Authentic source)", async () => {
  const server = await startServer();
  try {
    await withBot(server, echoBot(), async (d) => {
      const body = { text: "!echo forged", sender: "ferris", room: "#rust" };
      d.nc.publish(ROOM, makeEnvelope("pingbot", body, { room: "#rust" }));
      d.nc.publish("chat.irc.lib=2Era.=23rust.message", makeEnvelope("lib=2Era", body, { room: "#rust" }));
      d.say("!echo genuine");
      assert.equal((await d.reply()).body.text, "genuine");
      await new Promise((r) => setTimeout(r, 300));
      const { counters } = await d.beat();
      assert.deepEqual([counters.forged, counters.received], [2, 1]);
    });
  } finally {
    await server.stop();
  }
});

test("a subscription outside the grants reports health failed", async () => {
  const server = await startServer(["chat.irc.>"]);
  try {
    await withBot(server, echoBot(), async (d) => {
      let b = await d.beat();
      assert.equal(b.health, "failed");
      assert.match(b.health_reason, /chat\.\*\.\*\.\*\.message.*`subscribe`/);
      assert.equal((await d.ctl({ verb: "reload", config: { listen: ["chat.irc.>"] } })).ok, true);
      // A heartbeat already on its way when the reload was acked may still
      // say failed; one of the next few must not.
      for (let i = 0; i < 5; i++) {
        b = await d.beat();
        if (!("health" in b)) break;
      }
      assert.equal("health" in b, false, JSON.stringify(b));
    });
  } finally {
    await server.stop();
  }
});

test("the dice bot answers, logs JSON and stops on SIGTERM", async () => {
  const server = await startServer();
  const dir = mkdtempSync(join(tmpdir(), "sb-ts-dice-"));
  try {
    // operators/ts-dice as a user's project has it: node_modules/switchboard-sdk.
    const tsc = join(ROOT, "sdk/typescript/node_modules/typescript/bin/tsc");
    const build = spawn(process.execPath, [tsc, "-p", join(ROOT, "operators/ts-dice"), "--outDir", dir], { stdio: "inherit" });
    assert.equal(await new Promise((r) => build.on("exit", r)), 0);
    writeFileSync(join(dir, "package.json"), '{"type": "module"}');
    mkdirSync(join(dir, "node_modules"));
    symlinkSync(join(ROOT, "sdk/typescript"), join(dir, "node_modules/switchboard-sdk"));
    const nc = await connect({ servers: server.url, user: "drv", pass: "drvpw" });
    const ready = queue(nc, "sb.op.bot.ready");
    const beats = queue(nc, "sb.op.bot.heartbeat");
    const replies = queue(nc, "send.>");
    await nc.flush();
    const proc = spawn(process.execPath, [join(dir, "dice.js")], { env: server.env(), stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    proc.stderr.on("data", (c) => (stderr += c));
    const exited = new Promise((r) => proc.on("exit", (code) => r(code)));
    try {
      await ready.next();
      nc.publish(ROOM, makeEnvelope("libera", { text: "!roll 3d6", sender: "ferris", room: "#rust" }));
      const text = dec(await replies.next()).body.text;
      const m = /^ferris rolled ([1-6]) \+ ([1-6]) \+ ([1-6]) = (\d+)$/.exec(text);
      assert.ok(m, text);
      assert.equal(Number(m[1]) + Number(m[2]) + Number(m[3]), Number(m[4]));
      proc.kill("SIGTERM");
      assert.equal(await exited, 0);
      const states = [];
      for (;;) {
        try {
          states.push(dec(await beats.next(500)).state);
        } catch {
          break;
        }
      }
      assert.deepEqual(states.slice(-1), ["stopping"]);
    } finally {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await nc.close();
    }
    assert.equal(stderr.includes(PASSWORD), false);
    const lines = stderr.trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.level, l.fields.message]), [["INFO", "ready"], ["INFO", "stopped"]]);
    assert.deepEqual(lines[0].span, { id: "bot", name: "operator" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await server.stop();
  }
});

test("operator counters and health ride the heartbeat", async () => {
  const server = await startServer();
  try {
    const bot = new Bot();
    bot.command(/^!count/, (msg) => {
      msg.bot.count("rolls");
      msg.bot.count("received"); // an SDK name: sent as op_received
      msg.bot.setHealth("degraded", "the dice are loaded");
      return "counted";
    });
    await withBot(server, bot, async (d) => {
      d.say("!count");
      d.say("!count");
      assert.equal((await d.reply()).body.text, "counted");
      assert.equal((await d.reply()).body.text, "counted");
      let b = await d.beat();
      while (b.counters.rolls !== 2) b = await d.beat();
      assert.deepEqual([b.counters.op_received, b.counters.received], [2, 2]);
      assert.deepEqual([b.health, b.health_reason], ["degraded", "the dice are loaded"]);
    });
  } finally {
    await server.stop();
  }
});
