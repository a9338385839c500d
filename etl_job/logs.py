"""Log lines: one JSON object per line for CloudWatch, readable text on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


def fields(**values: object) -> dict[str, dict[str, object]]:
    """Structured fields for a log call: ``log.info("message", extra=fields(rows=10))``."""
    return {"fields": values}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "message", ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``12:00:00 INFO message  key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extra = "  ".join(f"{key}={value}" for key, value in getattr(record, "fields", {}).items())
        line = f"{time} {record.levelname:<7} {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str, log_format: str) -> None:
    """Send all log records to stderr in the given format (stdout carries only the metric line)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("google", "urllib3", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
