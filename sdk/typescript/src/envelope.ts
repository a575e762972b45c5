// Envelopes, subjects and tokens (docs/PROTOCOL.md: Envelope, Subjects,
// Token escaping). Pure functions: the parts of the wire an operator gets
// wrong by hand (validation order, the timestamp format, strict escaping).
import { randomInt } from "node:crypto";

export const MAX_ENVELOPE_BYTES = 1_048_576;
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PLAIN = /^[A-Za-z0-9_-]$/;
const RFC3339 = /^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:[Zz]|[+-](\d\d):(\d\d))$/;

/** An envelope: who published it, when, headers, and the body. */
export interface Envelope {
  source: string;
  timestamp: string;
  headers: Record<string, string>;
  body: unknown;
}

/** A message that is not a valid envelope; the message says which rule it broke. */
export class EnvelopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EnvelopeError";
  }
  /** A stable class for callers that branch: always `malformed`. */
  kind(): "malformed" {
    return "malformed";
  }
}

/** The current time as the protocol writes it: UTC, six fractional digits, `Z`. */
export function now(): string {
  return new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** A fresh envelope id: 22 random base-62 characters, like the Rust SDK's NUID. */
export function newId(): string {
  let id = "";
  for (let i = 0; i < 22; i++) id += BASE62[randomInt(62)];
  return id;
}

/** Any string -> exactly one NATS subject token (reversible). */
export function escapeToken(raw: string): string {
  if (raw === "") return "=";
  let out = "";
  for (const b of Buffer.from(raw, "utf8")) {
    const c = String.fromCharCode(b);
    out += PLAIN.test(c) ? c : "=" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** Inverse of escapeToken; only canonical tokens are accepted (else an Error). */
export function unescapeToken(token: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < token.length; ) {
    const m = token[i] === "=" ? /^=([0-9A-F]{2})/.exec(token.slice(i)) : null;
    if (m) {
      bytes.push(parseInt(m[1]!, 16));
      i += 3;
    } else {
      bytes.push(...Buffer.from(token[i]!, "utf8"));
      i += 1;
    }
  }
  let text = "";
  if (token !== "=") {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bytes));
    } catch {
      throw new Error(`not a canonical escaped token: ${JSON.stringify(token)}`);
    }
  }
  if (escapeToken(text) !== token) throw new Error(`not a canonical escaped token: ${JSON.stringify(token)}`);
  return text;
}

function validTimestamp(ts: unknown): boolean {
  const m = typeof ts === "string" ? RFC3339.exec(ts) : null;
  if (!m) return false;
  const [y, mo, d, h, mi, s, oh, om] = m.slice(1).map((x) => Number(x ?? 0)) as number[];
  const days = [31, (y! % 4 === 0 && y! % 100 !== 0) || y! % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return mo! >= 1 && mo! <= 12 && d! >= 1 && d! <= days[mo! - 1]! && h! <= 23 && mi! <= 59 && s! <= 60 && oh! <= 23 && om! <= 59;
}

function kindOf(v: unknown): string {
  if (v === null) return "JSON null";
  if (Array.isArray(v)) return "a JSON array";
  return { object: "a JSON object", string: "a JSON string", boolean: "a JSON boolean" }[typeof v as string] ?? "a JSON number";
}

/** Top-level keys of a JSON object text, to refuse repeated ones (JSON.parse keeps the last silently). */
function repeatedTopLevelKey(text: string): boolean {
  const keys = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (keys.has(key)) return true;
        keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === "{" || c === "[") {
      depth++;
      if (depth === 1 && c === "{") expectKey = true;
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return false;
}

/** Decode and validate an envelope, rules in the protocol's order; EnvelopeError says why. */
export function parseEnvelope(data: Uint8Array): Envelope {
  if (data.length > MAX_ENVELOPE_BYTES) {
    throw new EnvelopeError(`envelope is ${data.length} bytes, over the ${MAX_ENVELOPE_BYTES}-byte limit`);
  }
  let text: string;
  let env: unknown;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(data);
    env = JSON.parse(text);
  } catch (e) {
    throw new EnvelopeError(`envelope is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof env !== "object" || env === null || Array.isArray(env)) {
    throw new EnvelopeError(`envelope must be a JSON object, but it is ${kindOf(env)}`);
  }
  if (repeatedTopLevelKey(text)) throw new EnvelopeError("envelope has a repeated top-level key");
  const o = env as Record<string, unknown>;
  const source = o.source;
  if (typeof source !== "string" || source === "" || Buffer.byteLength(source) > 256) {
    throw new EnvelopeError("envelope field `source` must be a non-empty string of at most 256 bytes");
  }
  if (!validTimestamp(o.timestamp)) throw new EnvelopeError("envelope field `timestamp` must be an RFC 3339 date-time");
  const headers = "headers" in o ? o.headers : {};
  if (
    typeof headers !== "object" ||
    headers === null ||
    Array.isArray(headers) ||
    !Object.entries(headers).every(([k, v]) => typeof v === "string" && k !== "" && Buffer.byteLength(k) <= 128)
  ) {
    throw new EnvelopeError("envelope field `headers` must be an object of strings, names of 1-128 bytes");
  }
  if (!("body" in o)) throw new EnvelopeError("envelope field `body` is missing");
  return { source, timestamp: o.timestamp as string, headers: headers as Record<string, string>, body: o.body };
}

/** An envelope as the Rust SDK writes it: compact, header names sorted, a fresh `id`. */
export function makeEnvelope(source: string, body: unknown, headers: Record<string, string> = {}): Uint8Array {
  const all: Record<string, string> = { id: newId(), ...headers };
  const sorted = Object.fromEntries(Object.entries(all).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return new TextEncoder().encode(JSON.stringify({ source, timestamp: now(), headers: sorted, body }));
}

/** `<verb>.<protocol>.<instance>.<room>.<kind>`, the names escaped (`verb` is chat or send). */
export function chatSubject(verb: "chat" | "send", protocol: string, instance: string, room: string, kind = "message"): string {
  return [verb, escapeToken(protocol), escapeToken(instance), escapeToken(room), kind].join(".");
}
