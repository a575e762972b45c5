// Logs to stderr in the daemon's JSON line format: the fields of the Rust
// SDK's `tracing` JSON (`timestamp`, `level`, `fields.message`, `spans`),
// which the daemon keeps as fields and shows as `INFO operator{id=dice}:
// ready`. SWITCHBOARD_LOG_FORMAT=text gives plain lines for a terminal;
// SWITCHBOARD_LOG (`debug`, `info`, `warn`, `error`) sets the level.
import { now } from "./envelope.js";

const LEVELS = { DEBUG: 10, INFO: 20, WARN: 30, ERROR: 40 } as const;
export type Level = keyof typeof LEVELS;

/** The operator's logger. `fields` are extra key/values (never a secret). */
export class Logger {
  private readonly min: number;
  private readonly text: boolean;
  constructor(private readonly id: string) {
    const want = (process.env.SWITCHBOARD_LOG ?? "").trim().toUpperCase().replace("WARNING", "WARN");
    this.min = LEVELS[want as Level] ?? LEVELS.INFO;
    this.text = (process.env.SWITCHBOARD_LOG_FORMAT ?? "").trim() === "text";
  }
  debug(message: string, fields?: Record<string, unknown>): void {
    this.write("DEBUG", message, fields);
  }
  info(message: string, fields?: Record<string, unknown>): void {
    this.write("INFO", message, fields);
  }
  warn(message: string, fields?: Record<string, unknown>): void {
    this.write("WARN", message, fields);
  }
  error(message: string, fields?: Record<string, unknown>): void {
    this.write("ERROR", message, fields);
  }
  private write(level: Level, message: string, fields: Record<string, unknown> = {}): void {
    if (LEVELS[level] < this.min) return;
    if (this.text) {
      const extra = Object.entries(fields).map(([k, v]) => ` ${k}=${String(v)}`).join("");
      process.stderr.write(`${level} operator{id=${this.id}}: ${message}${extra}\n`);
      return;
    }
    const span = { id: this.id, name: "operator" };
    const line = { timestamp: now(), level, fields: { message, ...fields }, target: "switchboard", span, spans: [span] };
    process.stderr.write(JSON.stringify(line) + "\n");
  }
}
