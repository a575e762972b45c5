"""A dice bot: `!roll 2d6` answers "ferris rolled 3 + 5 = 8"."""
import random

from switchboard import Bot, Message

bot = Bot()

@bot.command(r"^!roll ([1-9]\d?)d([1-9]\d{0,2})\b")
def roll(msg: Message) -> str:
    count, sides = map(int, msg.args)
    rolls = [random.randint(1, sides) for _ in range(count)]
    return f"{msg.sender} rolled {' + '.join(map(str, rolls))} = {sum(rolls)}"

bot.run()
