// A real nats-server per test on a free loopback port, with the daemon's
// kind of users: `op-bot` (an operator: its own subjects, its inbox prefix,
// chat grants) and `drv` (the test, allowed everything). The binary is
// SWITCHBOARD_NATS_SERVER, else the project's .tools/venv/bin/nats-server.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { createServer, connect as tcp } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(fileURLToPath(import.meta.url), "../../../..");
export const PASSWORD = "s3cret-Zq8x-never-logged";

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

export async function startServer(subscribe = ["chat.>"]) {
  const bin = process.env.SWITCHBOARD_NATS_SERVER || join(ROOT, ".tools/venv/bin/nats-server");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`make tools\``);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "sb-ts-sdk-"));
  const grants = subscribe.map((s) => JSON.stringify(s)).join(", ");
  writeFileSync(join(dir, "nats.conf"), `
listen: 127.0.0.1:${port}
authorization { users = [
  {user: drv, password: drvpw},
  {user: "op-bot", password: "${PASSWORD}", permissions: {
    publish: {allow: ["sb.op.bot.>", "_INBOX_bot.>", "send.>"]},
    subscribe: {allow: ["sb.ctl.bot", "_INBOX_bot.>", ${grants}]},
    allow_responses: true}}
] }
`);
  writeFileSync(join(dir, "password"), PASSWORD + "\n");
  chmodSync(join(dir, "password"), 0o400);
  const proc = spawn(bin, ["-c", join(dir, "nats.conf")], { stdio: "ignore" });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise((res) => {
      const c = tcp(port, "127.0.0.1", () => { c.destroy(); res(true); });
      c.on("error", () => res(false));
    });
    if (up) break;
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error("nats-server did not start");
    await new Promise((r) => setTimeout(r, 20));
  }
  const url = `nats://127.0.0.1:${port}`;
  return {
    url,
    /** The launch environment the daemon would give `bot`, the password in a 0400 file. */
    env: (extra = {}) => ({
      SWITCHBOARD_ID: "bot", SWITCHBOARD_NATS_URL: url, SWITCHBOARD_NATS_USER: "op-bot",
      SWITCHBOARD_NATS_PASSWORD_FILE: join(dir, "password"), SWITCHBOARD_NATS_INBOX_PREFIX: "_INBOX_bot",
      SWITCHBOARD_HEARTBEAT_MS: "100", ...extra,
    }),
    stop: async () => {
      proc.kill("SIGTERM");
      if (proc.exitCode === null) await new Promise((r) => proc.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
