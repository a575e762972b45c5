"""Envelopes and tokens, on the examples docs/PROTOCOL.md gives."""

from __future__ import annotations

import json

import pytest

from switchboard import EnvelopeError, chat_subject, escape_token, make_envelope, parse_envelope, unescape_token

TOKENS = [("#rust.beginners", "=23rust=2Ebeginners"), ("did:plc:abc123", "did=3Aplc=3Aabc123"),
          ("héllo wörld", "h=C3=A9llo=20w=C3=B6rld"), ("", "="), ("@npub1xyz", "=40npub1xyz"),
          ("irc-libera_2", "irc-libera_2")]


@pytest.mark.parametrize("raw, token", TOKENS)
def test_tokens_round_trip(raw: str, token: str) -> None:
    assert escape_token(raw) == token and unescape_token(token) == raw


@pytest.mark.parametrize("token", ["ab=2", "=2e", "=G0", "=41", "a.b", "é", "=C3"])
def test_non_canonical_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValueError):
        unescape_token(token)


def test_a_made_envelope_parses_and_has_the_rust_shape() -> None:
    data = make_envelope("dice", {"text": "hi"}, {"room": "#r", "in-reply-to": "x"})
    env = json.loads(data)
    assert list(env) == ["source", "timestamp", "headers", "body"]
    assert list(env["headers"]) == sorted(env["headers"]) and len(env["headers"]["id"]) == 22
    assert parse_envelope(data)["body"] == {"text": "hi"}
    assert chat_subject("send", "irc", "libera", "#rust") == "send.irc.libera.=23rust.message"


@pytest.mark.parametrize("data, why", [
    (b"x" * 1_048_577, "over the 1048576-byte limit"),
    (b"[]", "JSON object"),
    (b'{"source":"a","source":"b","timestamp":"2024-05-01T12:00:00Z","body":1}', "repeated"),
    (b'{"source":"","timestamp":"2024-05-01T12:00:00Z","body":1}', "`source`"),
    (b'{"source":"a","timestamp":"2024-05-01 12:00:00Z","body":1}', "`timestamp`"),
    (b'{"source":"a","timestamp":"2024-02-30T12:00:00Z","body":1}', "`timestamp`"),
    (b'{"source":"a","timestamp":"2024-05-01T12:00:00Z","headers":null,"body":1}', "`headers`"),
    (b'{"source":"a","timestamp":"2024-05-01T12:00:00Z","headers":{"id":1},"body":1}', "`headers`"),
    (b'{"source":"a","timestamp":"2024-05-01T12:00:00Z"}', "`body`"),
    (b'{"source":"a","timestamp":"2024-05-01T12:00:00Z","body":NaN}', "not valid JSON"),
])
def test_invalid_envelopes_say_which_rule(data: bytes, why: str) -> None:
    with pytest.raises(EnvelopeError, match=why):
        parse_envelope(data)


def test_a_valid_envelope_with_a_null_body_and_no_headers() -> None:
    env = parse_envelope(b'{"source":"a","timestamp":"2024-05-01T14:30:00.5+02:00","body":null}')
    assert env["body"] is None and env["headers"] == {}
