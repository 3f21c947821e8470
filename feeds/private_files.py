"""Files only calsync's own user may read: the data folder, the SQLite database and its
companions, the queue, the generated keys (docs/protocol.md "Secrets")."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def _tighten(path: Path, mode: int) -> None:
    """chmod to `mode` when the path is ours and allows more than that (an older install)."""
    info = path.stat()
    if info.st_uid == os.geteuid() and info.st_mode & 0o777 & ~mode:
        path.chmod(mode)


def private_dir(path: Path) -> None:
    """A folder only its owner can enter (0700): it holds the database, the queue and keys."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, 0o700)


def private_file(path: Path, *, create: bool = True) -> None:
    """A file only its owner can read (0600), created empty (for SQLite to fill) if missing."""
    if create:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    elif not path.exists():
        return
    _tighten(path, 0o600)


def write_secret_file(key_file: Path, content: str) -> None:
    """Create the key file with its content in one step.

    The key is written to a private temporary file first and then hard-linked into place:
    a link fails when the name exists, so of several processes starting at once (gunicorn
    workers) exactly one key wins, and nobody ever reads a half-written or empty file.
    """
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won; use its key
            os.link(tmp, key_file)
    finally:
        tmp.unlink(missing_ok=True)
