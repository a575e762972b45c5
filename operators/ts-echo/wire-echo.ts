// The wire example: a Switchboard operator in TypeScript on Node with
// nats.js (npm `nats`) and no SDK, for who wants to see the protocol by
// hand (echo.ts is the same operator on sdk/typescript):
// answers "!ts <text>" with "<text>" in the same room. It speaks the
// operator contract of docs/PROTOCOL.md: launch environment, ready,
// heartbeats, an ack for every control verb, SIGTERM/SIGINT (shutdown),
// SIGHUP (reload from SWITCHBOARD_CONFIG_FILE), exit 0 when stopped.
//
// Config (the manifest's [config]): {"prefix": "!ts "}; other keys are
// refused. Build: tsc -p operators/ts-echo/tsconfig.wire.json; run: node target/ts-echo/wire-echo.js
import { connect, Msg, NatsConnection, Subscription } from "nats";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";

type State = "starting" | "running" | "halted" | "stopping";
type Config = { prefix: string };
const VERBS = ["halt", "resume", "reload", "restart", "shutdown"] as const;
type Verb = (typeof VERBS)[number];

/** A request refused with a failure code (docs/PROTOCOL.md, Acks). */
class Refused extends Error {
  constructor(readonly code: "bad_request" | "invalid_config" | "handler_failed", message: string) {
    super(message);
  }
}

/** A launch variable; blank counts as unset. */
const env = (name: string): string | undefined => process.env[name]?.trim() || undefined;
/** A secret: `<name>_FILE` (the daemon's way: a file only this operator can read), else `<name>`. */
const secret = (name: string): string | undefined => {
  const file = env(name + "_FILE");
  return file ? readFileSync(file, "utf8").replace(/[\r\n]+$/, "") : env(name);
};
/** The config: SWITCHBOARD_CONFIG_FILE, else SWITCHBOARD_CONFIG, else {}. */
const launchConfig = (): unknown => {
  const file = env("SWITCHBOARD_CONFIG_FILE");
  return JSON.parse(file ? readFileSync(file, "utf8") : env("SWITCHBOARD_CONFIG") ?? "{}");
};
const ID = env("SWITCHBOARD_ID") ?? "";
const now = () => new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000Z"); // 6 fractional digits
const encode = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const log = (msg: string) => process.stderr.write(`ts-echo ${ID}: ${msg}\n`);

function checkConfig(config: unknown): Config {
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new Refused("invalid_config", "invalid config: expected a JSON object");
  }
  for (const key of Object.keys(config)) {
    if (key !== "prefix") throw new Refused("invalid_config", `invalid config: unknown field \`${key}\`, expected \`prefix\``);
  }
  const prefix = (config as { prefix?: unknown }).prefix ?? "!ts ";
  if (typeof prefix !== "string" || prefix === "") {
    throw new Refused("invalid_config", "invalid config: `prefix` must be a non-empty string");
  }
  return { prefix };
}

/** (verb, config) of a control request, or Refused("bad_request"). */
function parseControl(data: Uint8Array): [Verb, unknown] {
  let req: unknown;
  try {
    req = JSON.parse(new TextDecoder().decode(data));
  } catch (e) {
    throw new Refused("bad_request", `control request is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof req !== "object" || req === null || Array.isArray(req)) {
    throw new Refused("bad_request", 'control request must be a JSON object like {"verb":"halt"}');
  }
  const { verb, config } = req as { verb?: unknown; config?: unknown };
  if (typeof verb !== "string" || !(VERBS as readonly string[]).includes(verb)) {
    throw new Refused("bad_request", `control request needs a \`verb\`, one of ${VERBS.join(", ")}`);
  }
  if (verb === "reload" && !("config" in (req as object))) {
    throw new Refused("bad_request", "control request `reload` has no `config` field");
  }
  return [verb as Verb, config];
}

class Echo {
  state: State = "starting";
  seq = 0;
  readonly started = Date.now();
  subs: Subscription[] = [];
  counters = { received: 0, published: 0, malformed: 0, handler_errors: 0, held_shed: 0 };
  /** Deliveries that arrived while halted, handled on resume (oldest shed past 10,000). */
  held: Msg[] = [];
  stopped!: () => void;
  readonly done = new Promise<void>((resolve) => (this.stopped = resolve));

  constructor(readonly nc: NatsConnection, public config: Config) {}

  publish(subject: string, payload: unknown) {
    this.nc.publish(subject, encode(payload));
    this.counters.published++;
  }

  /** Subscribe per config. */
  start() {
    this.subs.push(this.nc.subscribe("chat.*.*.*.message", { callback: (err, msg) => err || this.onChat(msg) }));
  }

  stop() {
    for (const s of this.subs.splice(0)) s.unsubscribe();
  }

  onChat(msg: Msg) {
    if (this.state === "halted") {
      if (this.held.push(msg) > 10_000) (this.held.shift(), this.counters.held_shed++);
      return;
    }
    if (this.state !== "running") return;
    let env: { headers?: Record<string, string>; body?: { text?: unknown } };
    try {
      env = JSON.parse(new TextDecoder().decode(msg.data));
      if (typeof env !== "object" || env === null || !("body" in env)) throw new Error("not an envelope");
    } catch {
      this.counters.malformed++;
      return;
    }
    this.counters.received++;
    try {
      const text = env.body?.text;
      if (typeof text !== "string" || !text.startsWith(this.config.prefix)) return;
      const rest = text.slice(this.config.prefix.length);
      if (!rest.trim()) return;
      const [, proto, inst, room] = msg.subject.split(".");
      const headers: Record<string, string> = { id: randomBytes(11).toString("hex") };
      if (env.headers?.room) headers.room = env.headers.room;
      if (env.headers?.id) headers["in-reply-to"] = env.headers.id;
      this.publish(`send.${proto}.${inst}.${room}.message`, { source: ID, timestamp: now(), headers, body: { text: rest } });
    } catch (e) {
      this.counters.handler_errors++;
      log(`cannot answer on ${msg.subject}: ${(e as Error).message}`);
    }
  }

  async ready() {
    await this.nc.flush(); // the server has our subscriptions before it routes ready
    this.publish(`sb.op.${ID}.ready`, { id: ID, pid: process.pid, protocol: 1, version: "0.1.0", timestamp: now() });
    await this.nc.flush();
  }

  heartbeat() {
    this.seq++;
    this.publish(`sb.op.${ID}.heartbeat`, {
      id: ID, pid: process.pid, seq: this.seq, state: this.state,
      uptime_ms: Date.now() - this.started, counters: { ...this.counters }, timestamp: now(),
    });
  }

  reload(config: unknown) {
    const next = checkConfig(config); // invalid_config: nothing changes
    this.stop();
    this.held = []; // queued for the old subscriptions
    this.config = next;
    this.start();
  }

  async control(verb: Verb, config: unknown) {
    if (verb === "halt" && this.state === "running") this.state = "halted";
    else if (verb === "resume" && this.state === "halted") {
      this.state = "running";
      for (const msg of this.held.splice(0)) this.onChat(msg);
    }
    else if (verb === "reload") this.reload(config);
    else if (verb === "restart") {
      this.state = "starting";
      this.stop();
      this.start();
      this.state = "running";
      await this.ready();
    } else if (verb === "shutdown") this.state = "stopping";
  }

  async onControl(msg: Msg) {
    let verb: Verb | undefined;
    let error: { code: string; message: string } | undefined;
    try {
      const [v, config] = parseControl(msg.data);
      verb = v;
      await this.control(v, config);
    } catch (e) {
      error = { code: e instanceof Refused ? e.code : "handler_failed", message: (e as Error).message };
    }
    if (msg.reply) {
      msg.respond(encode({ ok: !error, id: ID, ...(verb && { verb }), state: this.state, ...(error && { error }) }));
      this.counters.published++;
      await this.nc.flush();
    }
    if (verb === "shutdown" && !error) this.stopped();
  }
}

async function main(): Promise<number> {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(ID)) throw new Error("SWITCHBOARD_ID must be 1-64 characters of A-Z a-z 0-9 _ -");
  const config = checkConfig(launchConfig());
  const interval = Number(env("SWITCHBOARD_HEARTBEAT_MS") ?? "5000");
  if (!Number.isInteger(interval) || interval < 1) throw new Error("SWITCHBOARD_HEARTBEAT_MS must be a whole number ≥ 1");
  const nc = await connect({
    servers: (env("SWITCHBOARD_NATS_URL") ?? "nats://127.0.0.1:4222").split(",").map((s) => s.trim()).filter(Boolean),
    user: env("SWITCHBOARD_NATS_USER"),
    pass: secret("SWITCHBOARD_NATS_PASSWORD"),
    token: secret("SWITCHBOARD_NATS_TOKEN"),
    inboxPrefix: env("SWITCHBOARD_NATS_INBOX_PREFIX"),
    name: ID,
    maxReconnectAttempts: -1,
  });
  const op = new Echo(nc, config);
  nc.subscribe(`sb.ctl.${ID}`, { callback: (err, msg) => err || void op.onControl(msg) });
  op.start();
  op.state = "running";
  await op.ready();
  const timer = setInterval(() => op.heartbeat(), interval);
  process.on("SIGTERM", op.stopped).on("SIGINT", op.stopped);
  process.on("SIGHUP", () => {
    const file = env("SWITCHBOARD_CONFIG_FILE");
    try {
      op.reload(file ? JSON.parse(readFileSync(file, "utf8")) : op.config);
      log("SIGHUP: config reloaded");
    } catch (e) {
      log(`SIGHUP: reload failed, old config kept: ${(e as Error).message}`);
    }
  });
  await op.done;
  clearInterval(timer);
  op.state = "stopping";
  op.stop();
  op.heartbeat(); // the final heartbeat, state "stopping"
  await nc.flush();
  await nc.close();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    log((e as Error).message);
    process.exit(1);
  },
);
