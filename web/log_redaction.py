"""Secrets out of every log record: feed tokens and connect links travel in URL paths
(/feeds/<token>.ics, /connect/<token>), and request paths end up in log messages — Flask's
"Exception on /feeds/<token>.ics [GET]", waitress's "Exception while serving /feeds/...", a
traceback that quotes a URL. Whoever reads the logs must not be able to subscribe to a feed or
open a staff member's page with what is written there.

A log record factory (logging.setLogRecordFactory) rather than a filter: a filter sits on one
logger or handler and misses records of the loggers and handlers that other libraries (waitress,
huey, werkzeug) or the deployment add later; every record of the process is made by the factory.
gunicorn's access log has its own redaction (deploy/gunicorn.conf.py), which also drops query
strings.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# The secret segment after /feeds/ or /connect/, up to the next separator. Anything that is not
# a token (e.g. "/connect/" alone) has no segment and is left as it is.
SECRET_PATH = re.compile(r"(/(?:feeds|connect)/)[^/?#\s\"'<>\[\]]+")
REDACTED = "[secret]"
_MARK = "_calsync_redacting"


def redact_secrets(text: str) -> str:
    return SECRET_PATH.sub(r"\1" + REDACTED, text)


def _redact(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
        return
    clean = redact_secrets(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        # Formatters reuse exc_text when it is set, so the traceback is written redacted too.
        record.exc_text = redact_secrets(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact_secrets(record.stack_info)


def install_log_redaction() -> None:
    """Redact every log record made from now on in this process (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, _MARK, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact(record)
        return record

    setattr(factory, _MARK, True)
    logging.setLogRecordFactory(factory)
