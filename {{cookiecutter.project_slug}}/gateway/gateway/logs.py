"""The gateway's logs: JSON lines with trace ids, secrets redacted (`service_common.logs`)."""

from __future__ import annotations

from service_common.logs import configure_json_logging


def configure_logging(level: str) -> None:
    configure_json_logging(level)
