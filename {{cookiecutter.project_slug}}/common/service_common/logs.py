"""JSON log lines, one object per line, carrying the current trace and span ids.

Call sites log ids, counts, statuses and timings, never prompts, completions or keys.
As a second line of defence every line is redacted before it is written: API-key-like
tokens (`sk-...`), bearer credentials and the password of a URL are replaced, and an
extra field whose name says it holds a secret (`api_key`, `authorization`, ...) is
written as `[redacted]`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
_SECRET_TEXT = re.compile(
    r"(?i)\bbearer\s+[^\s\"',]+"  # an Authorization header's credentials
    r"|\bsk-[\w-]{6,}"  # OpenAI-style API keys, the gateway's own (sk-gw-...) included
)
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_SECRET_FIELD = re.compile(r"(?i)(authorization|api_?key|password|passwd|secret|token)$")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "color_message",
}
# One line per outgoing HTTP call at INFO is noise (and costs time); warnings still show.
QUIET_LOGGERS = ("httpx", "httpcore")


def redact(text: str) -> str:
    """`text` with key-like tokens, bearer credentials and URL passwords replaced."""
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return _SECRET_TEXT.sub(REDACTED, text)


def _field(key: str, value: Any) -> Any:
    if _SECRET_FIELD.search(key):
        return REDACTED
    return redact(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(_trace_ids())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = _field(key, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


def _trace_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:  # an image without OpenTelemetry logs without ids
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


def configure_json_logging(level: str | int, quiet: Iterable[str] = QUIET_LOGGERS) -> None:
    """Every record as a JSON line on stderr, uvicorn's included; `quiet` loggers at
    WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
