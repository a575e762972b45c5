// A dice bot: `!roll 2d6` answers "ferris rolled 3 + 5 = 8".
import { Bot } from "switchboard-sdk";

const bot = new Bot();

bot.command(/^!roll ([1-9]\d?)d([1-9]\d{0,2})\b/, (msg) => {
  const [count = 1, sides = 6] = msg.args.map(Number);
  const rolls = Array.from({ length: count }, () => 1 + Math.floor(Math.random() * sides));
  return `${msg.sender} rolled ${rolls.join(" + ")} = ${rolls.reduce((a, b) => a + b)}`;
});

bot.run();
