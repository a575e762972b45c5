"""Envelopes, subjects and tokens (docs/PROTOCOL.md: Envelope, Subjects, Token escaping).

Pure functions, no I/O: the parts of the wire an operator gets wrong by
hand (validation order, the timestamp format, strict token escaping).
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
from typing import Any

MAX_ENVELOPE_BYTES = 1_048_576
MAX_SOURCE_BYTES = 256
MAX_HEADER_NAME_BYTES = 128

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:[Zz]|[+-](\d\d):(\d\d))", re.ASCII
)


class EnvelopeError(ValueError):
    """A message that is not a valid envelope; the message says which rule it broke."""

    def kind(self) -> str:
        """A stable class for callers that branch: always `malformed`."""
        return "malformed"


def now() -> str:
    """The current time as the protocol writes it: UTC, six fractional digits, `Z`."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id() -> str:
    """A fresh envelope id: 22 random base-62 characters, like the Rust SDK's NUID."""
    return "".join(secrets.choice(_BASE62) for _ in range(22))


def escape_token(raw: str) -> str:
    """Any string -> exactly one NATS subject token (reversible)."""
    if raw == "":
        return "="
    return "".join(chr(b) if b in _PLAIN else "=%02X" % b for b in raw.encode("utf-8"))


def unescape_token(token: str) -> str:
    """Inverse of escape_token; only canonical tokens are accepted (else ValueError)."""
    raw = re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), token.encode("utf-8"))
    text = "" if token == "=" else raw.decode("utf-8")
    if escape_token(text) != token:
        raise ValueError(f"not a canonical escaped token: {token!r}")
    return text


def _kind(v: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean"}
    return "JSON null" if v is None else "a JSON " + names.get(type(v), "number")


class _Obj(dict[str, Any]):
    """A JSON object that remembers whether a key appeared twice."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated = len(self) != len(pairs)


def _valid_timestamp(ts: Any) -> bool:
    m = _RFC3339.fullmatch(ts) if isinstance(ts, str) else None
    if m is None:
        return False
    try:  # the calendar check; year 0 reads as a leap year, second 60 as a leap second
        datetime.datetime(int(m[1]) or 2000, int(m[2]), int(m[3]), int(m[4]), int(m[5]), min(int(m[6]), 59))
    except ValueError:
        return False
    return int(m[6]) <= 60 and int(m[7] or 0) <= 23 and int(m[8] or 0) <= 59


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_envelope(data: bytes) -> dict[str, Any]:
    """Decode and validate an envelope, rules in the protocol's order; EnvelopeError says why."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope is {len(data)} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit")
    try:
        env = json.loads(data.decode("utf-8"), object_pairs_hook=_Obj, parse_constant=_reject_constant)
    except ValueError as e:
        raise EnvelopeError(f"envelope is not valid JSON: {e}") from None
    if not isinstance(env, dict):
        raise EnvelopeError(f"envelope must be a JSON object, but it is {_kind(env)}")
    if isinstance(env, _Obj) and env.repeated:
        raise EnvelopeError("envelope has a repeated top-level key")
    source = env.get("source")
    if not isinstance(source, str) or not 0 < len(source.encode()) <= MAX_SOURCE_BYTES:
        raise EnvelopeError("envelope field `source` must be a non-empty string of at most 256 bytes")
    if not _valid_timestamp(env.get("timestamp")):
        raise EnvelopeError("envelope field `timestamp` must be an RFC 3339 date-time")
    headers = env.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) and 0 < len(k.encode()) <= MAX_HEADER_NAME_BYTES for k, v in headers.items()
    ):
        raise EnvelopeError("envelope field `headers` must be an object of strings, names of 1-128 bytes")
    if "body" not in env:
        raise EnvelopeError("envelope field `body` is missing")
    env.setdefault("headers", {})
    return dict(env)


def make_envelope(source: str, body: Any, headers: dict[str, str] | None = None) -> bytes:
    """An envelope as the Rust SDK writes it: compact, header names sorted, a fresh `id`."""
    hs = {"id": new_id(), **(headers or {})}
    env = {"source": source, "timestamp": now(), "headers": dict(sorted(hs.items())), "body": body}
    return json.dumps(env, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def chat_subject(verb: str, protocol: str, instance: str, room: str, kind: str = "message") -> str:
    """`<verb>.<protocol>.<instance>.<room>.<kind>`, the names escaped (`verb` is chat or send)."""
    return ".".join([verb, escape_token(protocol), escape_token(instance), escape_token(room), kind])
