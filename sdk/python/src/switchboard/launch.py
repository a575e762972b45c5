"""The launch environment (docs/PROTOCOL.md, "Launch environment").

The daemon starts an operator with an empty environment plus these
variables. Credentials and config come through files the daemon writes
for this operator alone (`SWITCHBOARD_NATS_PASSWORD_FILE`,
`SWITCHBOARD_NATS_TOKEN_FILE`, `SWITCHBOARD_CONFIG_FILE`), so no secret
sits in an environment that `ps e` or a crash report could show; the
plain variables stay accepted for operators run by hand. The `_FILE`
variant wins when both are set.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class LaunchError(Exception):
    """A launch variable is missing or invalid; the message names it, never a secret's value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable

    def kind(self) -> str:
        """A stable class for callers that branch: always `launch`."""
        return "launch"


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value; blank counts as unset (PROTOCOL.md)."""
    value = env.get(name, "").strip()
    return value or None


def _read_file(variable: str, path: str, strip: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise LaunchError(variable, f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LaunchError(variable, f"{path} is not UTF-8 text") from None
    return text.rstrip(strip)


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """`<name>_FILE` (its text, trailing newline trimmed), else `<name>`."""
    path = _get(env, name + "_FILE")
    if path is not None:
        value = _read_file(name + "_FILE", path, "\r\n")
        if not value:
            raise LaunchError(name + "_FILE", f"{path} is empty")
        return value
    return _get(env, name)


def read_config(env: Mapping[str, str]) -> Any:
    """The operator's config: `SWITCHBOARD_CONFIG_FILE`, else `SWITCHBOARD_CONFIG`, else `{}`.

    Errors never quote the text: it may hold resolved secrets.
    """
    path = _get(env, "SWITCHBOARD_CONFIG_FILE")
    if path is not None:
        variable, text = "SWITCHBOARD_CONFIG_FILE", _read_file("SWITCHBOARD_CONFIG_FILE", path, "")
    else:
        variable, text = "SWITCHBOARD_CONFIG", _get(env, "SWITCHBOARD_CONFIG") or "{}"
    try:
        return json.loads(text)
    except ValueError as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise LaunchError(variable, f"not valid JSON{where}") from None


@dataclass(frozen=True)
class Launch:
    """What the daemon told this process. `repr` masks the secrets."""

    id: str
    urls: list[str]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None
    nkey: str | None = None
    inbox_prefix: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    config: Any = field(default=None, repr=False)
    config_file: str | None = None
    state_dir: str | None = None
    scratch_dir: str | None = None
    heartbeat_ms: int = 5000
    control: str = "nats"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Launch":
        """Read and check every variable; the first problem is a LaunchError."""
        env = os.environ if env is None else env
        ident = _get(env, "SWITCHBOARD_ID")
        if ident is None:
            raise LaunchError("SWITCHBOARD_ID", "required, but not set (the daemon sets it; by hand, set it yourself)")
        if not ID_RE.fullmatch(ident):
            raise LaunchError("SWITCHBOARD_ID", "must be 1-64 characters of A-Z a-z 0-9 _ -")
        urls = [u.strip() for u in (_get(env, "SWITCHBOARD_NATS_URL") or "nats://127.0.0.1:4222").split(",")]
        urls = [u for u in urls if u]
        if not urls:
            raise LaunchError("SWITCHBOARD_NATS_URL", "has no URL")
        user, password = _get(env, "SWITCHBOARD_NATS_USER"), _secret(env, "SWITCHBOARD_NATS_PASSWORD")
        if (user is None) != (password is None):
            raise LaunchError("SWITCHBOARD_NATS_USER", "and SWITCHBOARD_NATS_PASSWORD(_FILE) must be set together")
        hb = _get(env, "SWITCHBOARD_HEARTBEAT_MS") or "5000"
        if not hb.isascii() or not hb.isdigit() or int(hb) < 1:
            raise LaunchError("SWITCHBOARD_HEARTBEAT_MS", "must be a whole number of milliseconds, at least 1")
        control = _get(env, "SWITCHBOARD_CONTROL") or "nats"
        if control not in ("nats", "signals"):
            raise LaunchError("SWITCHBOARD_CONTROL", "must be `nats` or `signals`")
        cert, key = _get(env, "SWITCHBOARD_NATS_TLS_CERT"), _get(env, "SWITCHBOARD_NATS_TLS_KEY")
        if (cert is None) != (key is None):
            raise LaunchError("SWITCHBOARD_NATS_TLS_CERT", "and SWITCHBOARD_NATS_TLS_KEY must be set together")
        return cls(
            id=ident,
            urls=urls,
            user=user,
            password=password,
            token=_secret(env, "SWITCHBOARD_NATS_TOKEN"),
            creds=_get(env, "SWITCHBOARD_NATS_CREDS"),
            nkey=_get(env, "SWITCHBOARD_NATS_NKEY"),
            inbox_prefix=_get(env, "SWITCHBOARD_NATS_INBOX_PREFIX"),
            tls_ca=_get(env, "SWITCHBOARD_NATS_TLS_CA"),
            tls_cert=cert,
            tls_key=key,
            config=read_config(env),
            config_file=_get(env, "SWITCHBOARD_CONFIG_FILE"),
            state_dir=_get(env, "SWITCHBOARD_STATE_DIR"),
            scratch_dir=_get(env, "SWITCHBOARD_SCRATCH_DIR"),
            heartbeat_ms=int(hb),
            control=control,
        )
