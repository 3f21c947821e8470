"""The HTTP client's own log lines, without the paths of the URLs it fetched.

A subscribed calendar's address is often its only secret, and docs/protocol.md says URLs with
secrets are never logged; feeds.sources.fetch installs this before its first request.
"""

from __future__ import annotations

import logging
import re

# Everything from "/" up to a space or quote: the path and query of a URL in a log message.
_URL_PATH = re.compile(r"(?<![\w/])/[^\s\"']*")
# The HTTP client's loggers that write request lines or redirect targets.
_CLIENT_LOGGERS = ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.connection")


class _RedactPaths(logging.Filter):
    """urllib3 (under niquests) logs every request line, path and query included, at DEBUG. A
    subscribed calendar's address is often its only secret (Google's and iCloud's secret
    addresses), so the paths are replaced before any handler sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _URL_PATH.sub("/[path hidden]", record.getMessage()), ()
        return True


def hide_paths_in_client_logs() -> None:
    """Installed when the first session is made (nothing happens at import time); once."""
    for name in _CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactPaths) for f in logger.filters):
            logger.addFilter(_RedactPaths())
