"""Switchboard operators in Python: a chat bot in ten lines.

    import random
    from switchboard import Bot, Message

    bot = Bot()

    @bot.command(r"^!roll ([1-9]\\d?)d([1-9]\\d{0,2})\\b")
    def roll(msg: Message) -> str:
        ...

    bot.run()

`Bot.run()` does everything docs/PROTOCOL.md asks of an operator (launch
environment, ready, heartbeats, control verbs, signals, shutdown); see
docs/writing-operators.md.
"""

from .bot import PROTOCOL_VERSION, Bot, Message, Refused
from .envelope import EnvelopeError, chat_subject, escape_token, make_envelope, parse_envelope, unescape_token
from .launch import Launch, LaunchError

__all__ = [
    "PROTOCOL_VERSION", "Bot", "Message", "Refused", "EnvelopeError", "Launch", "LaunchError",
    "chat_subject", "escape_token", "make_envelope", "parse_envelope", "unescape_token",
]
__version__ = "0.1.0"
