"""Logs to stderr in the daemon's JSON line format.

The daemon captures stderr line by line; a line that is the Rust SDK's
`tracing` JSON (`timestamp`, `level`, `fields.message`, `spans`) keeps its
fields in `switchboard logs` and the durable stream, and is shown as
`INFO operator{id=dice}: ready`. Python operators write the same shape,
so their logs read like everyone else's. `SWITCHBOARD_LOG_FORMAT=text`
gives plain lines for a person at a terminal; `SWITCHBOARD_LOG` (`debug`,
`info`, `warn`, `error`) sets the level, `info` by default.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from .envelope import now

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
           "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR}
_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
          logging.ERROR: "ERROR", logging.CRITICAL: "ERROR"}
# LogRecord attributes that are not fields a caller passed with `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the fields of the Rust SDK's `tracing` JSON."""

    def __init__(self, operator_id: str) -> None:
        super().__init__()
        self.operator_id = operator_id

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {"message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).splitlines()[-1]
        span = {"id": self.operator_id, "name": "operator"}
        line = {"timestamp": now(), "level": _NAMES.get(record.levelno, "INFO"), "fields": fields,
                "target": record.name, "span": span, "spans": [span]}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def init_logging(operator_id: str) -> logging.Logger:
    """Send every logger's records to stderr in the daemon's format; the SDK's own logger.

    Calling it twice replaces the handler instead of doubling lines.
    """
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("SWITCHBOARD_LOG_FORMAT", "").strip() == "text":
        handler.setFormatter(logging.Formatter(f"%(levelname)s operator{{id={operator_id}}}: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(operator_id))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_switchboard", False)]:
        root.removeHandler(old)
    setattr(handler, "_switchboard", True)
    root.addHandler(handler)
    level = os.environ.get("SWITCHBOARD_LOG", "").strip().lower()
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # The NATS client's own chatter only when something is wrong.
    logging.getLogger("nats").setLevel(logging.WARNING)
    return logging.getLogger("switchboard")
