// Switchboard operators in TypeScript (or JavaScript) on Node 20+: a chat
// bot in ten lines. `Bot.run()` does everything docs/PROTOCOL.md asks of
// an operator; see docs/writing-operators.md.
export { Bot, Message, Refused, PROTOCOL_VERSION } from "./bot.js";
export type { BotOptions, Config, Handler, Health, Hook, Reply, State } from "./bot.js";
export { EnvelopeError, chatSubject, escapeToken, makeEnvelope, parseEnvelope, unescapeToken } from "./envelope.js";
export type { Envelope } from "./envelope.js";
export { LaunchError, launchFromEnv } from "./launch.js";
export type { Launch } from "./launch.js";
export { Logger } from "./log.js";
