// The launch environment and envelopes: files first, secrets never shown, the protocol's examples.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { escapeToken, launchFromEnv, makeEnvelope, parseEnvelope, unescapeToken, LaunchError } from "../dist/index.js";

const SECRET = "pw-Zq8x-secret";

test("the file variants win over the plain ones", () => {
  const dir = mkdtempSync(join(tmpdir(), "sb-launch-"));
  try {
    writeFileSync(join(dir, "pw"), SECRET + "\n");
    writeFileSync(join(dir, "token"), "tok-from-file\r\n");
    writeFileSync(join(dir, "config.json"), '{"prefix": "!file "}');
    const l = launchFromEnv({
      SWITCHBOARD_ID: "dice", SWITCHBOARD_NATS_USER: "op-dice",
      SWITCHBOARD_NATS_PASSWORD: "plain", SWITCHBOARD_NATS_PASSWORD_FILE: join(dir, "pw"),
      SWITCHBOARD_NATS_TOKEN: "plain", SWITCHBOARD_NATS_TOKEN_FILE: join(dir, "token"),
      SWITCHBOARD_CONFIG: '{"prefix": "!env "}', SWITCHBOARD_CONFIG_FILE: join(dir, "config.json"),
    });
    assert.equal(l.password, SECRET);
    assert.equal(l.token, "tok-from-file");
    assert.deepEqual(l.config, { prefix: "!file " });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the plain variables still work, blank is unset, defaults", () => {
  const l = launchFromEnv({ SWITCHBOARD_ID: "d", SWITCHBOARD_NATS_USER: "u", SWITCHBOARD_NATS_PASSWORD: SECRET,
    SWITCHBOARD_NATS_TOKEN_FILE: "  ", SWITCHBOARD_NATS_URL: " nats://a:1, ,nats://b:2 " });
  assert.equal(l.password, SECRET);
  assert.equal(l.token, undefined);
  assert.deepEqual(l.urls, ["nats://a:1", "nats://b:2"]);
  assert.deepEqual([l.config, l.heartbeatMs, l.control], [{}, 5000, "nats"]);
});

for (const [env, variable] of [
  [{}, "SWITCHBOARD_ID"],
  [{ SWITCHBOARD_ID: "no spaces" }, "SWITCHBOARD_ID"],
  [{ SWITCHBOARD_ID: "d", SWITCHBOARD_NATS_PASSWORD: SECRET }, "SWITCHBOARD_NATS_USER"],
  [{ SWITCHBOARD_ID: "d", SWITCHBOARD_HEARTBEAT_MS: "0" }, "SWITCHBOARD_HEARTBEAT_MS"],
  [{ SWITCHBOARD_ID: "d", SWITCHBOARD_CONTROL: "ipc" }, "SWITCHBOARD_CONTROL"],
  [{ SWITCHBOARD_ID: "d", SWITCHBOARD_CONFIG: `{"password": "${SECRET}"` }, "SWITCHBOARD_CONFIG"],
  [{ SWITCHBOARD_ID: "d", SWITCHBOARD_NATS_USER: "u", SWITCHBOARD_NATS_PASSWORD_FILE: "/nonexistent/pw" }, "SWITCHBOARD_NATS_PASSWORD_FILE"],
  [{ SWITCHBOARD_ID: "d", SWITCHBOARD_CONFIG_FILE: "/nonexistent/c.json" }, "SWITCHBOARD_CONFIG_FILE"],
]) {
  test(`a bad ${variable} is named, no secret shown (${JSON.stringify(env).length})`, () => {
    assert.throws(() => launchFromEnv(env), (e) =>
      e instanceof LaunchError && e.variable === variable && e.message.startsWith(variable) && !e.message.includes(SECRET));
  });
}

test("tokens round-trip; non-canonical ones are refused", () => {
  for (const [raw, token] of [["#rust.beginners", "=23rust=2Ebeginners"], ["héllo wörld", "h=C3=A9llo=20w=C3=B6rld"],
    ["", "="], ["@npub1xyz", "=40npub1xyz"], ["irc-libera_2", "irc-libera_2"]]) {
    assert.equal(escapeToken(raw), token);
    assert.equal(unescapeToken(token), raw);
  }
  for (const bad of ["ab=2", "=2e", "=G0", "=41", "a.b", "é", "=C3"]) assert.throws(() => unescapeToken(bad), /canonical/, bad);
});

test("envelopes: the Rust shape, and each validation rule", () => {
  const env = JSON.parse(new TextDecoder().decode(makeEnvelope("dice", { text: "hi" }, { room: "#r", "in-reply-to": "x" })));
  assert.deepEqual(Object.keys(env), ["source", "timestamp", "headers", "body"]);
  assert.deepEqual(Object.keys(env.headers), ["id", "in-reply-to", "room"]);
  const enc = (s) => new TextEncoder().encode(s);
  for (const [data, why] of [
    ["[]", /JSON object/],
    ['{"source":"","timestamp":"2024-05-01T12:00:00Z","body":1}', /`source`/],
    ['{"source":"a","timestamp":"2024-05-01 12:00:00Z","body":1}', /`timestamp`/],
    ['{"source":"a","timestamp":"2024-02-30T12:00:00Z","body":1}', /`timestamp`/],
    ['{"source":"a","timestamp":"2024-05-01T12:00:00Z","headers":null,"body":1}', /`headers`/],
    ['{"source":"a","timestamp":"2024-05-01T12:00:00Z"}', /`body`/],
    ['{"source":"a","timestamp":"2024-05-01T12:00:00Z","body":{"source":1,"source":2}}', null],
  ]) {
    if (why) assert.throws(() => parseEnvelope(enc(data)), why, data);
    else assert.doesNotThrow(() => parseEnvelope(enc(data)), data);
  }
  assert.equal(parseEnvelope(enc('{"source":"a","timestamp":"2024-05-01T14:30:00.5+02:00","body":null}')).body, null);
});
