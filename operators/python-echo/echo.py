"""Answers "!py <text>" with "<text>" in the same room: the python-echo operator on sdk/python.

Config (the manifest's [config]): `prefix` (default "!py "), and the SDK's `listen` (NATS
subjects, default chat.*.*.*.message); any other key is refused. The same operator written
against the wire alone, without the SDK, is wire_echo.py.
"""
from typing import Any

from switchboard import Bot, Message


def check(config: dict[str, Any]) -> None:
    if not config["prefix"]:
        raise ValueError("config key `prefix` must not be empty")


bot = Bot(config={"prefix": "!py "}, check_config=check, version="0.1.0")


@bot.on_message
def echo(msg: Message) -> str | None:
    prefix: str = bot.config["prefix"]
    rest = msg.text[len(prefix):] if msg.text.startswith(prefix) else ""
    return rest if rest.strip() else None


if __name__ == "__main__":
    bot.run()
