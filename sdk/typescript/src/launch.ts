// The launch environment (docs/PROTOCOL.md, "Launch environment").
//
// The daemon passes credentials and config through files written for this
// operator alone (SWITCHBOARD_NATS_PASSWORD_FILE, SWITCHBOARD_NATS_TOKEN_FILE,
// SWITCHBOARD_CONFIG_FILE), so no secret sits in an environment that `ps e`
// or a crash report could show; the plain variables stay accepted for
// operators run by hand. The `_FILE` variant wins when both are set.
import { readFileSync } from "node:fs";

/** A launch variable is missing or invalid; the message names it, never a secret's value. */
export class LaunchError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable}: ${problem}`);
    this.name = "LaunchError";
  }
  /** A stable class for callers that branch: always `launch`. */
  kind(): "launch" {
    return "launch";
  }
}

type Env = Record<string, string | undefined>;

/** A variable's value; blank counts as unset (PROTOCOL.md). */
function get(env: Env, name: string): string | undefined {
  return env[name]?.trim() || undefined;
}

function readText(variable: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw new LaunchError(variable, `cannot read ${path} (${code})`);
  }
}

/** `<name>_FILE` (its text, trailing newline trimmed), else `<name>`. */
function secret(env: Env, name: string): string | undefined {
  const path = get(env, name + "_FILE");
  if (path !== undefined) {
    const value = readText(name + "_FILE", path).replace(/[\r\n]+$/, "");
    if (value === "") throw new LaunchError(name + "_FILE", `${path} is empty`);
    return value;
  }
  return get(env, name);
}

/** The config: SWITCHBOARD_CONFIG_FILE, else SWITCHBOARD_CONFIG, else `{}`. Errors never quote it (secrets). */
export function readConfig(env: Env): unknown {
  const path = get(env, "SWITCHBOARD_CONFIG_FILE");
  const [variable, text] =
    path !== undefined
      ? ["SWITCHBOARD_CONFIG_FILE", readText("SWITCHBOARD_CONFIG_FILE", path)]
      : ["SWITCHBOARD_CONFIG", get(env, "SWITCHBOARD_CONFIG") ?? "{}"];
  try {
    return JSON.parse(text);
  } catch {
    throw new LaunchError(variable, "not valid JSON");
  }
}

/** What the daemon told this process. */
export interface Launch {
  id: string;
  urls: string[];
  user?: string;
  password?: string;
  token?: string;
  creds?: string;
  nkey?: string;
  inboxPrefix?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  config: unknown;
  configFile?: string;
  stateDir?: string;
  scratchDir?: string;
  heartbeatMs: number;
  control: "nats" | "signals";
}

/** Read and check every variable; the first problem is a LaunchError. */
export function launchFromEnv(env: Env = process.env): Launch {
  const id = get(env, "SWITCHBOARD_ID");
  if (id === undefined) throw new LaunchError("SWITCHBOARD_ID", "required, but not set (the daemon sets it; by hand, set it yourself)");
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new LaunchError("SWITCHBOARD_ID", "must be 1-64 characters of A-Z a-z 0-9 _ -");
  const urls = (get(env, "SWITCHBOARD_NATS_URL") ?? "nats://127.0.0.1:4222")
    .split(",")
    .map((u) => u.trim())
    .filter((u) => u !== "");
  if (urls.length === 0) throw new LaunchError("SWITCHBOARD_NATS_URL", "has no URL");
  const user = get(env, "SWITCHBOARD_NATS_USER");
  const password = secret(env, "SWITCHBOARD_NATS_PASSWORD");
  if ((user === undefined) !== (password === undefined)) {
    throw new LaunchError("SWITCHBOARD_NATS_USER", "and SWITCHBOARD_NATS_PASSWORD(_FILE) must be set together");
  }
  const hb = get(env, "SWITCHBOARD_HEARTBEAT_MS") ?? "5000";
  if (!/^[0-9]+$/.test(hb) || Number(hb) < 1) {
    throw new LaunchError("SWITCHBOARD_HEARTBEAT_MS", "must be a whole number of milliseconds, at least 1");
  }
  const control = get(env, "SWITCHBOARD_CONTROL") ?? "nats";
  if (control !== "nats" && control !== "signals") throw new LaunchError("SWITCHBOARD_CONTROL", "must be `nats` or `signals`");
  const tlsCert = get(env, "SWITCHBOARD_NATS_TLS_CERT");
  const tlsKey = get(env, "SWITCHBOARD_NATS_TLS_KEY");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new LaunchError("SWITCHBOARD_NATS_TLS_CERT", "and SWITCHBOARD_NATS_TLS_KEY must be set together");
  }
  return {
    id,
    urls,
    user,
    password,
    token: secret(env, "SWITCHBOARD_NATS_TOKEN"),
    creds: get(env, "SWITCHBOARD_NATS_CREDS"),
    nkey: get(env, "SWITCHBOARD_NATS_NKEY"),
    inboxPrefix: get(env, "SWITCHBOARD_NATS_INBOX_PREFIX"),
    tlsCa: get(env, "SWITCHBOARD_NATS_TLS_CA"),
    tlsCert,
    tlsKey,
    config: readConfig(env),
    configFile: get(env, "SWITCHBOARD_CONFIG_FILE"),
    stateDir: get(env, "SWITCHBOARD_STATE_DIR"),
    scratchDir: get(env, "SWITCHBOARD_SCRATCH_DIR"),
    heartbeatMs: Number(hb),
    control,
  };
}
