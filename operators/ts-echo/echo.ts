// Answers "!ts <text>" with "<text>" in the same room: the ts-echo operator
// on sdk/typescript. Config (the manifest's [config]): `prefix` (default
// "!ts "), and the SDK's `listen`; any other key is refused. The same
// operator written against the wire alone is wire-echo.ts.
import { Bot } from "switchboard-sdk";

const bot = new Bot({
  config: { prefix: "!ts " },
  checkConfig: (config) => {
    if (config.prefix === "") throw new Error("config key `prefix` must not be empty");
  },
  version: "0.1.0",
});

bot.onMessage((msg) => {
  const prefix = bot.config.prefix as string;
  const rest = msg.text.startsWith(prefix) ? msg.text.slice(prefix.length) : "";
  return rest.trim() ? rest : undefined;
});

bot.run();
