// The operator runtime: what `switchboard_bus::run` does in Rust, for Node.
//
// A Bot reads the launch environment, connects with the operator's own
// credentials and inbox prefix, subscribes, announces ready, heartbeats with
// counters and health, answers every control verb, handles SIGTERM, SIGINT
// and SIGHUP, and shuts down with a final heartbeat; the bot's author writes
// only what it says. Behaviour follows docs/PROTOCOL.md ("Lifecycle"), and
// where the page leaves a choice, the Rust runtime's.
import { readFileSync } from "node:fs";
import {
  connect,
  credsAuthenticator,
  ErrorCode,
  Events,
  nkeyAuthenticator,
  type ConnectionOptions,
  type Msg,
  type NatsConnection,
  type Subscription,
} from "nats";
import { EnvelopeError, chatSubject, makeEnvelope, now, parseEnvelope, unescapeToken, type Envelope } from "./envelope.js";
import { LaunchError, launchFromEnv, readConfig, type Launch } from "./launch.js";
import { Logger } from "./log.js";

export const PROTOCOL_VERSION = 1;
const VERBS = ["halt", "resume", "reload", "restart", "shutdown"] as const;
type Verb = (typeof VERBS)[number];
export type State = "starting" | "running" | "halted" | "stopping";
export type Health = "ok" | "degraded" | "failed";
const DEFAULT_LISTEN = ["chat.*.*.*.message"];
const DEDUPE_WINDOW = 8192;
/** The SDK's own heartbeat counters; an operator's counter of the same name is sent as `op_<name>`. */
const SDK_COUNTERS = [
  "received", "published", "malformed", "duplicates", "dropped", "handler_errors", "reconnects", "disconnects", "discarded",
  "forged",
];
/** An operator id: what the instance token of a chat subject must be to have an owner. */
const OPERATOR_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** What a handler returns: the reply text, or nothing for no reply. */
export type Reply = string | undefined | null | void;
export type Handler = (msg: Message) => Reply | Promise<Reply>;
export type Hook = (bot: Bot) => void | Promise<void>;
export type Config = Record<string, unknown>;

/** A control request refused with a failure code (bad_request, invalid_config, handler_failed). */
export class Refused extends Error {
  constructor(
    readonly code: "bad_request" | "invalid_config" | "handler_failed",
    message: string,
  ) {
    super(message);
    this.name = "Refused";
  }
  /** The failure code, for callers that branch. */
  kind(): string {
    return this.code;
  }
}

/** A chat message the bot received, with what a reply needs. */
export class Message {
  /** The command's regex match, for a command handler. */
  match: RegExpExecArray | null = null;
  constructor(
    readonly subject: string,
    readonly envelope: Envelope,
    readonly protocol: string,
    readonly instance: string,
    readonly room: string,
    readonly kind: string,
    readonly bot: Bot,
  ) {}
  get body(): unknown {
    return this.envelope.body;
  }
  private field(name: string): unknown {
    const b = this.envelope.body;
    return typeof b === "object" && b !== null ? (b as Record<string, unknown>)[name] : undefined;
  }
  /** The text, or "" when the body is not a chat message. */
  get text(): string {
    const t = this.field("text");
    return typeof t === "string" ? t : "";
  }
  get sender(): string {
    const s = this.field("sender");
    return typeof s === "string" ? s : "";
  }
  get private(): boolean {
    return this.field("private") === true;
  }
  /** The groups the command's regex captured ("" for one that took no part). */
  get args(): string[] {
    return this.match ? this.match.slice(1).map((g) => g ?? "") : [];
  }
  /** The envelope's `id` header, if it had one. */
  get id(): string | undefined {
    return this.envelope.headers.id;
  }
  /** The operator that published it. */
  get source(): string {
    return this.envelope.source;
  }
  /** Answer in the same room (or private conversation), with `in-reply-to` set. */
  async reply(text: string): Promise<void> {
    const t = this.subject.split(".");
    const headers: Record<string, string> = { room: this.room };
    if (this.id !== undefined) headers["in-reply-to"] = this.id;
    this.bot.publish(["send", t[1], t[2], t[3], "message"].join("."), { text }, headers);
  }
}

/** A gate chat deliveries wait at while the operator is halted. */
class Gate {
  private opened: Promise<void> = Promise.resolve();
  private release: (() => void) | null = null;
  close(): void {
    if (this.release === null) this.opened = new Promise((r) => (this.release = r));
  }
  open(): void {
    this.release?.();
    this.release = null;
  }
  wait(): Promise<void> {
    return this.opened;
  }
}

export interface BotOptions {
  /** The keys the manifest's [config] may have, with their defaults; any other key is refused. */
  config?: Config;
  /** More checks on the complete config: throw (an Error, or Refused) to refuse it. */
  checkConfig?: (config: Config) => void;
  /** The operator's own version, sent in ready. */
  version?: string;
}

/** An operator. Register handlers, then call `run()`. */
export class Bot {
  readonly counters: Record<string, number> = Object.fromEntries(SDK_COUNTERS.map((c) => [c, 0]));
  config: Config;
  state: State = "starting";
  launch: Launch | undefined;
  log: Logger = new Logger("");
  private readonly defaults: Config;
  private readonly commands: { regex: RegExp; handler: Handler }[] = [];
  private readonly messageHandlers: Handler[] = [];
  private readonly startHooks: Hook[] = [];
  private readonly stopHooks: Hook[] = [];
  private nc: NatsConnection | undefined;
  private subs: Subscription[] = [];
  private readonly seen = new Set<string>();
  private seq = 0;
  private started = Date.now();
  private health: [Health, string | undefined] = ["ok", undefined];
  private readonly subFailures = new Set<string>();
  private exitCode = 0;
  private warned = -Infinity;
  private readonly gate = new Gate();
  private lock: Promise<unknown> = Promise.resolve();
  private finish: () => void = () => {};
  private readonly finished = new Promise<void>((r) => (this.finish = r));

  constructor(private readonly options: BotOptions = {}) {
    this.defaults = { listen: [...DEFAULT_LISTEN], ...(options.config ?? {}) };
    this.config = { ...this.defaults };
    this.gate.close();
  }

  // ---- what a bot's author uses ---------------------------------------------------

  /** Handle chat messages whose text matches `pattern`; `msg.args` has the groups. Return the reply. */
  command(pattern: RegExp | string, handler: Handler): this {
    const regex = typeof pattern === "string" ? new RegExp(pattern) : pattern;
    this.commands.push({ regex: new RegExp(regex.source, regex.flags.replace(/[gy]/g, "")), handler });
    return this;
  }

  /** Handle every chat message received (after the commands that matched it). */
  onMessage(handler: Handler): this {
    this.messageHandlers.push(handler);
    return this;
  }

  /** Run at start, after a reload and at an in-place restart, before ready: set up from `bot.config`. */
  onStart(hook: Hook): this {
    this.startHooks.push(hook);
    return this;
  }

  /** Run before a reload, an in-place restart and at shutdown: undo what onStart did. */
  onStop(hook: Hook): this {
    this.stopHooks.push(hook);
    return this;
  }

  get id(): string {
    return this.launch?.id ?? "";
  }

  /** The directory kept across restarts (inside the sandbox, the only lasting place to write). */
  get stateDir(): string | undefined {
    return this.launch?.stateDir;
  }

  /** A directory for temporary files, wiped when the operator stops. */
  get scratchDir(): string | undefined {
    return this.launch?.scratchDir;
  }

  /** Add to an operator counter, sent in every heartbeat (the SDK's own names get `op_`). */
  count(name: string, n = 1): void {
    const key = SDK_COUNTERS.includes(name) ? "op_" + name : name;
    this.counters[key] = (this.counters[key] ?? 0) + n;
  }

  /** Report ok, degraded or failed with a reason a person can act on (never a secret); a change beats at once. */
  setHealth(health: Health, reason?: string): void {
    const next: [Health, string | undefined] = [health, health === "ok" ? undefined : (reason ?? health).slice(0, 512)];
    if (next[0] === this.health[0] && next[1] === this.health[1]) return;
    this.health = next;
    if (this.nc !== undefined && this.state !== "starting") this.heartbeat();
  }

  /** Publish `body` in an envelope from this operator (a fresh `id`, the timestamp). */
  publish(subject: string, body: unknown, headers: Record<string, string> = {}): void {
    if (this.nc === undefined) throw new Error("not connected: publish from a handler or hook");
    this.nc.publish(subject, makeEnvelope(this.id, body, headers));
    this.counters.published! += 1;
  }

  /** Say `text` in a room: publishes on send.<protocol>.<instance>.<room>.<kind> (needs a grant). */
  send(protocol: string, instance: string, room: string, text: string, kind = "message"): void {
    this.publish(chatSubject("send", protocol, instance, room, kind), { text }, { room });
  }

  /** Run until shutdown, then exit the process (0 after a clean stop, 1 on a startup error). */
  async run(): Promise<never> {
    let code: number;
    try {
      code = await this.main();
    } catch (e) {
      new Logger(process.env.SWITCHBOARD_ID?.trim() ?? "").error(
        e instanceof LaunchError ? `bad launch environment: ${e.message}` : `failed: ${(e as Error).message}`,
      );
      code = 1;
    }
    process.exit(code);
  }

  // ---- the runtime --------------------------------------------------------------

  /** The whole life of the operator; the exit code. `launch` defaults to the environment. */
  async main(launch: Launch = launchFromEnv()): Promise<number> {
    this.launch = launch;
    this.log = new Logger(launch.id);
    try {
      this.config = this.checked(launch.config);
    } catch (e) {
      this.log.error(`the config is not valid: ${(e as Error).message}`);
      return 1;
    }
    try {
      this.nc = await this.connect(launch);
    } catch (e) {
      this.log.error((e as Error).message);
      return 1;
    }
    this.started = Date.now();
    const stop = () => this.finish();
    const hup = () => void this.exclusive(() => this.onSighup());
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    process.on("SIGHUP", hup);
    void this.watchStatus(this.nc);
    void this.nc.closed().then(() => this.finish()); // gone for good: shut down
    this.nc.subscribe(`sb.ctl.${this.id}`, { callback: (_err, msg) => void this.exclusive(() => this.onControl(msg)) });
    try {
      await this.start();
    } catch (e) {
      this.log.error(`start failed: ${(e as Error).message}`);
      await this.nc.close();
      return 1;
    }
    this.state = "running";
    this.gate.open();
    await this.announceReady();
    this.log.info("ready", { listen: (this.config.listen as string[]).join(" ") });
    const beat = this.beat();
    await this.finished;
    await this.exclusive(() => this.shutdown(beat));
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
    process.off("SIGHUP", hup);
    return this.exitCode;
  }

  /** One control action at a time: verbs, SIGHUP, shutdown. */
  private exclusive<T>(action: () => Promise<T>): Promise<T> {
    const next = this.lock.then(action, action);
    this.lock = next.catch(() => undefined);
    return next;
  }

  /** The complete config with defaults, or Refused("invalid_config") naming the key, never a value. */
  private checked(config: unknown): Config {
    if (config === null || config === undefined) config = {};
    if (typeof config !== "object" || config === null || Array.isArray(config)) {
      throw new Refused("invalid_config", "the config must be a JSON object (a TOML table)");
    }
    for (const key of Object.keys(config)) {
      if (!(key in this.defaults)) {
        const known = Object.keys(this.defaults).map((k) => `\`${k}\``).join(", ");
        throw new Refused("invalid_config", `unknown config key \`${key}\`; known keys: ${known}`);
      }
    }
    const merged: Config = { ...this.defaults, ...(config as Config) };
    for (const [key, def] of Object.entries(this.defaults)) {
      if (def !== null && def !== undefined && typeOf(merged[key]) !== typeOf(def)) {
        throw new Refused("invalid_config", `config key \`${key}\` must be ${typeName(def)}`);
      }
    }
    const listen = merged.listen as unknown[];
    if (listen.length === 0 || !listen.every((s) => typeof s === "string" && isSubject(s))) {
      throw new Refused(
        "invalid_config",
        'config key `listen` must be a non-empty list of NATS subjects like "chat.*.*.*.message" (`*` one token, `>` the rest)',
      );
    }
    if (this.options.checkConfig) {
      try {
        this.options.checkConfig(merged);
      } catch (e) {
        if (e instanceof Refused) throw e;
        throw new Refused("invalid_config", (e as Error).message);
      }
    }
    return merged;
  }

  private async connect(launch: Launch): Promise<NatsConnection> {
    const opts: ConnectionOptions = {
      servers: launch.urls,
      name: launch.id,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      waitOnFirstConnect: true,
      ignoreAuthErrorAbort: true,
    };
    if (launch.user !== undefined) Object.assign(opts, { user: launch.user, pass: launch.password });
    if (launch.token !== undefined) opts.token = launch.token;
    if (launch.inboxPrefix !== undefined) opts.inboxPrefix = launch.inboxPrefix; // our own inboxes only
    if (launch.creds !== undefined) opts.authenticator = credsAuthenticator(readFileSync(launch.creds));
    else if (launch.nkey !== undefined) opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(readFileSync(launch.nkey, "utf8").trim()));
    if (launch.tlsCa !== undefined || launch.tlsCert !== undefined) {
      opts.tls = { caFile: launch.tlsCa, certFile: launch.tlsCert, keyFile: launch.tlsKey };
    }
    // An authorization refusal is retried for 0.5 s: the embedded server re-checks every
    // client when it reloads its users, and refuses one whose CONNECT is in flight then.
    const refusedUntil = Date.now() + 500;
    const deadline = Date.now() + 10_000;
    const where = launch.urls.join(" ");
    for (;;) {
      const left = deadline - Date.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no NATS server accepted us within 10 s at ${where}`)), Math.max(left, 100));
      });
      const attempt = connect(opts);
      try {
        return await Promise.race([attempt, timeout]);
      } catch (e) {
        void attempt.then((nc) => nc.close(), () => undefined); // a late connection is not kept
        const code = (e as { code?: string }).code;
        if (code !== ErrorCode.AuthorizationViolation || Date.now() > refusedUntil) {
          if ((e as Error).message.startsWith("no NATS server")) throw e;
          throw new Error(`NATS at ${where} refused us: ${(e as Error).message}`);
        }
        await sleep(50);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /** Connection events: counters, and a subscription the server refused. */
  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) this.counters.disconnects! += 1;
      else if (s.type === Events.Reconnect) this.counters.reconnects! += 1;
      else if (s.type === Events.Error && s.permissionContext) {
        const { operation, subject } = s.permissionContext;
        if (operation === "subscription") {
          this.subFailures.add(subject);
          this.log.error(`the server refused the subscription to ${subject}: not granted by the manifest`);
          if (this.state !== "starting") this.judgeSubscriptions();
        } else {
          this.count("publish_refused");
          this.log.warn(`the server refused a publish to ${subject}: not granted by the manifest`);
        }
      }
    }
  }

  /** Subscribe per config, then the author's onStart hooks. */
  private async start(): Promise<void> {
    const nc = this.nc!;
    this.subFailures.clear();
    for (const subject of this.config.listen as string[]) {
      const sub = nc.subscribe(subject);
      this.subs.push(sub);
      void this.pump(sub);
    }
    for (const hook of this.startHooks) await hook(this);
    // PING/PONG: the server has seen the subscriptions and refused (-ERR, before the PONG)
    // any its grants do not cover; let watchStatus record those, then judge.
    await nc.flush();
    await new Promise((r) => setImmediate(r));
    this.judgeSubscriptions();
  }

  /** A subscription the server refused leaves the bot deaf: health `failed`, saying what to do. */
  private judgeSubscriptions(): void {
    const refused = (this.config.listen as string[]).filter((s) => this.subFailures.has(s));
    if (refused.length > 0) {
      this.setHealth(
        "failed",
        `not allowed to subscribe to ${refused.join(", ")}: the manifest's \`subscribe\` grants do not cover it; widen the grant or change \`listen\``,
      );
    } else if (this.health[0] === "failed" && (this.health[1] ?? "").startsWith("not allowed to subscribe")) {
      this.setHealth("ok");
    }
  }

  /** The author's onStop hooks, then drop the chat subscriptions (held deliveries with them). */
  private async stop(): Promise<void> {
    for (const hook of this.stopHooks) {
      try {
        await hook(this);
      } catch (e) {
        this.log.warn(`onStop failed: ${(e as Error).message}`);
      }
    }
    const subs = this.subs;
    this.subs = [];
    for (const sub of subs) sub.unsubscribe();
  }

  private async announceReady(): Promise<void> {
    const nc = this.nc!;
    await nc.flush(); // the server has our subscriptions before it routes ready
    const ready: Record<string, unknown> = { id: this.id, pid: process.pid, protocol: PROTOCOL_VERSION };
    if (this.options.version) ready.version = this.options.version;
    ready.timestamp = now();
    nc.publish(`sb.op.${this.id}.ready`, encode(ready));
    this.counters.published! += 1;
    await nc.flush();
    if (this.health[0] !== "ok") this.heartbeat(); // status shows why at once
  }

  private heartbeat(): void {
    this.seq += 1;
    const beat: Record<string, unknown> = {
      id: this.id, pid: process.pid, seq: this.seq, state: this.state,
      uptime_ms: Date.now() - this.started, counters: { ...this.counters },
    };
    if (this.health[0] !== "ok") [beat.health, beat.health_reason] = this.health;
    beat.timestamp = now();
    try {
      this.nc!.publish(`sb.op.${this.id}.heartbeat`, encode(beat));
      this.counters.published! += 1;
    } catch (e) {
      this.log.warn(`heartbeat not sent: ${(e as Error).message}`);
    }
  }

  /** The first heartbeat one interval after ready; a late one is delayed, never doubled. */
  private beat(): { stop: () => void } {
    let timer: NodeJS.Timeout;
    const tick = () => {
      this.heartbeat();
      timer = setTimeout(tick, this.launch!.heartbeatMs);
    };
    timer = setTimeout(tick, this.launch!.heartbeatMs);
    return { stop: () => clearTimeout(timer) };
  }

  // ---- receiving ----------------------------------------------------------------

  /**
   * Whether `envelope` may have come from its `source` on `subject`.
   *
   * docs/PROTOCOL.md, "Authentic source": a chat event
   * `chat.<protocol>.<instance>.…` belongs to the operator whose id is
   * `<instance>`; one whose `source` is anyone else (or whose instance token
   * is no operator id) is forged. Other subjects name no owner: their
   * `source` is a claim, passed on unchecked.
   */
  protected authentic(subject: string, envelope: Envelope): boolean {
    if (!subject.startsWith("chat.")) return true;
    const instance = subject.split(".", 4)[2];
    return instance !== undefined && OPERATOR_ID.test(instance) && envelope.source === instance;
  }

  /** One subscription's deliveries, in order, each after the halt gate. */
  private async pump(sub: Subscription): Promise<void> {
    try {
      for await (const msg of sub) {
        await this.gate.wait(); // halted: this delivery, and those queued behind it, are held
        if (!this.subs.includes(sub)) {
          this.counters.discarded! += 1; // its subscription went with a reload or restart
          continue;
        }
        await this.deliver(msg);
      }
    } catch {
      // A refused subscription ends here; watchStatus reports it.
    }
  }

  private async deliver(msg: Msg): Promise<void> {
    let env: Envelope;
    try {
      env = parseEnvelope(msg.data);
    } catch (e) {
      this.counters.malformed! += 1;
      if (Date.now() - this.warned >= 10_000) {
        this.warned = Date.now(); // at most one warning per 10 s
        this.log.warn(`dropped a malformed envelope on ${msg.subject} (${this.counters.malformed} so far): ${(e as Error).message}`);
      }
      return;
    }
    if (!this.authentic(msg.subject, env)) {
      this.counters.forged! += 1;
      if (Date.now() - this.warned >= 10_000) {
        this.warned = Date.now(); // at most one warning per 10 s
        this.log.warn(`dropped a forged chat event on ${msg.subject}: source \`${env.source}\` does not own it (${this.counters.forged} so far)`);
      }
      return;
    }
    const id = env.headers.id;
    if (id !== undefined) {
      if (this.seen.has(id)) {
        this.counters.duplicates! += 1;
        return;
      }
      this.seen.add(id);
      if (this.seen.size > DEDUPE_WINDOW) this.seen.delete(this.seen.values().next().value as string);
    }
    this.counters.received! += 1;
    try {
      await this.handle(msg.subject, env);
    } catch (e) {
      this.counters.handler_errors! += 1; // one bad message never stops the operator
      this.log.warn(`handler failed on ${msg.subject}: ${(e as Error).message}`);
    }
  }

  private async handle(subject: string, env: Envelope): Promise<void> {
    const t = subject.split(".");
    if (t.length !== 5 || t[0] !== "chat") throw new Error("not a chat subject chat.<protocol>.<instance>.<room>.<kind>");
    const message = new Message(subject, env, unescapeToken(t[1]!), unescapeToken(t[2]!), unescapeToken(t[3]!), t[4]!, this);
    for (const { regex, handler } of this.commands) {
      const match = regex.exec(message.text);
      if (match) {
        message.match = match;
        await this.answer(message, handler);
      }
    }
    message.match = null;
    for (const handler of this.messageHandlers) await this.answer(message, handler);
  }

  private async answer(message: Message, handler: Handler): Promise<void> {
    const reply = await handler(message);
    if (typeof reply === "string" && reply !== "" && message.kind !== "notice") await message.reply(reply);
  }

  // ---- control ------------------------------------------------------------------

  private async onControl(msg: Msg): Promise<void> {
    let verb: Verb | undefined;
    let error: { code: string; message: string } | undefined;
    try {
      let config: unknown;
      [verb, config] = parseControl(msg.data);
      await this.control(verb, config);
    } catch (e) {
      error = { code: e instanceof Refused ? e.code : "handler_failed", message: (e as Error).message };
      this.log.warn(`control ${verb ?? "request"} refused: ${error.message}`);
    }
    const ack: Record<string, unknown> = { ok: error === undefined, id: this.id };
    if (verb !== undefined) ack.verb = verb;
    ack.state = this.state;
    if (error !== undefined) ack.error = error;
    if (msg.reply) {
      // a request without a reply subject is carried out, not answered
      msg.respond(encode(ack));
      this.counters.published! += 1;
      await this.nc!.flush();
    }
    if (verb === "shutdown" || this.exitCode) this.finish();
  }

  private async control(verb: Verb, config: unknown): Promise<void> {
    if (verb === "halt" && this.state === "running") {
      this.state = "halted";
      this.gate.close();
    } else if (verb === "resume" && this.state === "halted") {
      this.state = "running";
      this.gate.open(); // held deliveries are handled now, in order per subscription
    } else if (verb === "reload") {
      await this.reload(config);
    } else if (verb === "restart") {
      await this.restart();
    } else if (verb === "shutdown") {
      this.state = "stopping";
    }
  }

  private async reload(config: unknown): Promise<void> {
    const next = this.checked(config); // invalid_config: nothing changes
    const old = this.config;
    await this.stop();
    this.config = next;
    try {
      await this.start();
    } catch (e) {
      this.config = old; // half set up: restart in place with the previous config
      await this.restart();
      throw new Refused("handler_failed", `reload failed, previous config restored: ${(e as Error).message}`);
    }
  }

  /** In place: the same process, seq and uptime go on; ready again (a halted operator resumes). */
  private async restart(): Promise<void> {
    this.state = "starting";
    this.gate.close();
    await this.stop();
    try {
      this.config = this.checked(this.config);
      await this.start();
    } catch (e) {
      this.exitCode = 1; // this process cannot work: ack, then exit non-zero
      throw new Refused("handler_failed", `restart failed, exiting: ${(e as Error).message}`);
    }
    this.state = "running";
    this.gate.open();
    await this.announceReady();
  }

  /** Reload with SWITCHBOARD_CONFIG_FILE (the daemon rewrote it), else with the current config. */
  private async onSighup(): Promise<void> {
    let config: unknown = this.config;
    if (this.launch?.configFile) {
      try {
        config = readConfig({ SWITCHBOARD_CONFIG_FILE: this.launch.configFile });
      } catch (e) {
        this.log.warn(`SIGHUP: ${(e as Error).message}; reloading the current config`);
      }
    }
    try {
      if (this.state !== "stopping") {
        await this.reload(config);
        this.log.info("SIGHUP: config reloaded");
      }
    } catch (e) {
      this.log.error(`SIGHUP: reload failed, old config kept: ${(e as Error).message}`);
    }
    if (this.exitCode) this.finish();
  }

  /** docs/PROTOCOL.md, Shutdown: drain briefly, drop subscriptions, final heartbeat, flush. */
  private async shutdown(beat: { stop: () => void }): Promise<void> {
    const nc = this.nc!;
    beat.stop();
    if (this.state !== "halted" && !nc.isClosed()) {
      // not halted: deliveries already here, for at most 500 ms
      await Promise.race([Promise.allSettled(this.subs.map((s) => s.drain())), sleep(500)]);
    }
    this.state = "stopping";
    await this.stop();
    if (!nc.isClosed()) {
      this.heartbeat();
      try {
        await Promise.race([nc.flush(), sleep(1000).then(() => Promise.reject(new Error("timed out")))]);
      } catch (e) {
        this.log.warn(`final heartbeat not flushed: ${(e as Error).message}`);
      }
      await nc.close();
    }
    this.log.info("stopped");
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function encode(v: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(v));
}

function typeOf(v: unknown): string {
  return Array.isArray(v) ? "array" : v === null ? "null" : typeof v;
}

function typeName(def: unknown): string {
  const names: Record<string, string> = {
    boolean: "true or false", number: "a number", string: "a string", array: "a list", object: "a table",
  };
  return names[typeOf(def)] ?? typeOf(def);
}

function isSubject(s: string): boolean {
  const tokens = s.split(".");
  return tokens.every((t) => /^[^\s*>.]+$|^\*$|^>$/.test(t)) && !tokens.slice(0, -1).includes(">");
}

function kindOf(v: unknown): string {
  if (v === null) return "JSON null";
  if (Array.isArray(v)) return "a JSON array";
  return ({ object: "a JSON object", string: "a JSON string", boolean: "a JSON boolean" } as Record<string, string>)[typeof v] ?? "a JSON number";
}

/** [verb, config] of a control request, or Refused("bad_request") worded like the Rust runtime. */
function parseControl(data: Uint8Array): [Verb, unknown] {
  let req: unknown;
  try {
    req = JSON.parse(new TextDecoder().decode(data));
  } catch (e) {
    throw new Refused("bad_request", `control request is not valid JSON: ${(e as Error).message}`);
  }
  const verbs = VERBS.join(", ");
  let problem: string;
  if (typeof req !== "object" || req === null || Array.isArray(req)) {
    problem = `must be a JSON object like {"verb":"halt"}, but it is ${kindOf(req)}`;
  } else if (!("verb" in req)) {
    problem = `has no \`verb\` field; send e.g. {"verb":"halt"} (verbs: ${verbs})`;
  } else {
    const r = req as { verb: unknown; config?: unknown };
    if (typeof r.verb !== "string") {
      problem = `field \`verb\` must be a JSON string, but it is ${kindOf(r.verb)}`;
    } else if (!(VERBS as readonly string[]).includes(r.verb)) {
      problem = `has unknown control verb \`${r.verb.slice(0, 64)}\`; valid verbs are ${verbs}`;
    } else if (r.verb === "reload" && !("config" in r)) {
      problem = '`reload` has no `config` field; send the complete new config, e.g. {"verb":"reload","config":{}}';
    } else {
      return [r.verb as Verb, r.config];
    }
  }
  throw new Refused("bad_request", "control request " + problem);
}
