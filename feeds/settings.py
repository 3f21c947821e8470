"""The one typed settings object, read from CALSYNC_* environment variables.

Each field documents its variable and default. `load_settings()` is called by the CLI and
wsgi.py; tests build `Settings(...)` directly. Nothing reads the environment at import time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from calsync.feeds.errors import ConfigurationError
from calsync.feeds.mail.mime import check_address
from calsync.feeds.mail.smtp import parse_smtp_url

ENV_PREFIX = "CALSYNC_"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret
# A generated key has 64 characters; anything much shorter is a truncated or hand-edited file.
MIN_SECRET_KEY_LENGTH = 32


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=Path("./calsync-data"),
        description="CALSYNC_DATA_DIR: folder for the SQLite database and generated secrets.",
    )
    database_url: str | None = Field(
        default=None,
        description="CALSYNC_DATABASE_URL: SQLAlchemy URL; default SQLite file in the data dir.",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="CALSYNC_BASE_URL: public base URL that feed links are built on.",
    )
    secret_key: str | None = Field(
        default=None,
        description=(
            "CALSYNC_SECRET_KEY: signs sessions and encrypts feed tokens. Generated into the "
            "data dir on first start when unset; never a built-in default."
        ),
    )
    feed_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="CALSYNC_FEED_CACHE_BYTES: per-process memory for rendered feed bodies.",
    )
    token_touch_seconds: int = Field(
        default=300,
        ge=0,
        description=(
            "CALSYNC_TOKEN_TOUCH_SECONDS: a feed token's last-used time is written at most this "
            "often, so polling clients do not turn every feed GET into a database write."
        ),
    )
    credentials_key: str | None = Field(
        default=None,
        description=(
            "CALSYNC_CREDENTIALS_KEY: Fernet key(s), comma-separated, that seal stored calendar "
            "passwords and secret calendar addresses. The first seals, all open (rotation). "
            "Generated into the data dir when unset; keep it out of database backups."
        ),
    )
    allow_private_networks: bool = Field(
        default=False,
        description=(
            "CALSYNC_ALLOW_PRIVATE_NETWORKS: let calendar subscriptions reach loopback and private "
            "addresses. Only for tests and a local demo: it disables the SSRF protection."
        ),
    )
    queue_url: str | None = Field(
        default=None,
        description=(
            "CALSYNC_QUEUE_URL: redis://host:6379/0 to share background work between "
            "`calsync worker` processes; default a SQLite queue in the data dir, run inside "
            "`calsync serve`."
        ),
    )
    workers: int = Field(
        default=2, ge=0, le=64,
        description="CALSYNC_WORKERS: background worker threads inside `calsync serve` (0: none).",
    )
    fetch_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024,
        description="CALSYNC_FETCH_MAX_BYTES: largest calendar accepted from a subscription.",
    )
    fetch_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600,
        description="CALSYNC_FETCH_TIMEOUT_SECONDS: total time allowed for fetching one calendar.",
    )
    sync_lease_seconds: int = Field(
        default=300, ge=2, le=86_400,
        description=(
            "CALSYNC_SYNC_LEASE_SECONDS: how long a worker holds a connection while syncing it. "
            "A worker that dies mid-sync releases nothing; after this time the scheduler hands "
            "the connection to another worker. Must be longer than the fetch timeout."
        ),
    )
    max_occurrences: int = Field(
        default=10_000, ge=100, le=1_000_000,
        description="CALSYNC_MAX_OCCURRENCES: busy blocks read from one connection per sync window.",
    )
    mail_from: str = Field(
        default="calsync@localhost",
        description=(
            "CALSYNC_MAIL_FROM: sender of every email and ORGANIZER of the calendar invitations "
            "customers receive; use an address of your domain that accepts replies."
        ),
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description=(
            "CALSYNC_SMTP_URL: mail server, e.g. smtp://user:pass@host:587?starttls=1 or "
            "smtps://user:pass@host:465 (URL-encode special characters of the password). "
            "Unset: emails stay in the outbox, visible through the API, and are not sent."
        ),
    )
    smtp_timeout_seconds: float = Field(
        default=30.0, gt=0, le=300,
        description="CALSYNC_SMTP_TIMEOUT_SECONDS: time allowed for each exchange with the mail server.",
    )
    mail_max_attempts: int = Field(
        default=8, ge=1, le=50,
        description=(
            "CALSYNC_MAIL_MAX_ATTEMPTS: delivery attempts of one email, with growing pauses "
            "between them, before it is marked failed (it can then be retried through the API)."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            # Parsing and loading the dialect import no database driver and open no connection.
            make_url(value).get_dialect()
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise ValueError(
                "is not a SQLAlchemy database URL such as postgresql+psycopg://user@host/calsync "
                f"({exc})"
            ) from exc
        return value

    @field_validator("sync_lease_seconds")
    @classmethod
    def _lease_outlasts_a_fetch(cls, value: int, info: ValidationInfo) -> int:
        timeout = info.data.get("fetch_timeout_seconds")
        if timeout is not None and value <= timeout:
            raise ValueError(
                f"must be longer than CALSYNC_FETCH_TIMEOUT_SECONDS ({timeout:g}), or a slow "
                "calendar could be synced by two workers at once"
            )
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_an_address(cls, value: str) -> str:
        return check_address(value)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        parse_smtp_url(value.get_secret_value())  # raises ValueError without the password
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'calsync.sqlite3').resolve()}"

    def with_secret_key(self) -> Settings:
        """Return settings whose secret key is set, generating and keeping one in the data dir.

        A generated key lives in a file readable only by its owner; deleting it invalidates
        sessions and makes stored feed URLs unreadable (tokens keep working).
        """
        if self.secret_key:
            return self
        key_file = self.data_dir / SECRET_KEY_FILE
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if not key_file.exists():
                write_secret_file(key_file, secrets.token_urlsafe(48))
            key = key_file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"The data folder {self.data_dir} (CALSYNC_DATA_DIR) cannot hold the secret key: "
                f"{exc.strerror or exc}. Point CALSYNC_DATA_DIR at a writable folder, or set "
                "CALSYNC_SECRET_KEY."
            ) from exc
        if len(key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigurationError(
                f"The secret key file {key_file} is empty or too short. Restore it from a backup, "
                "or delete it to generate a new one (stored feed URLs must then be issued again)."
            )
        return self.model_copy(update={"secret_key": key})


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


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment; fail with a sentence naming the bad variable."""
    env = dict(os.environ if environ is None else environ)
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    # Variables that only the tests read are allowed beside the settings.
    # (The long fuzzing and load runs are started by exporting them for the whole suite.)
    test_only = {
        "CALSYNC_TEST_DATABASE_URL", "CALSYNC_TEST_REDIS_URL", "CALSYNC_FUZZ_EXAMPLES",
        "CALSYNC_FUZZ_FINDINGS", "CALSYNC_FUZZ_KEEP_GOING", "CALSYNC_FUZZ_MEMORY_MB",
        "CALSYNC_FUZZ_SECONDS", "CALSYNC_LOAD_SECONDS", "CALSYNC_SCHEMATHESIS_EXAMPLES",
    }
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known | test_only)
    if unknown:
        raise ConfigurationError(
            f"Unknown setting {', '.join(unknown)}: remove it or fix its spelling. "
            f"Known settings: {', '.join(sorted(known))}."
        )
    values: dict[str, Any] = {
        name: env[ENV_PREFIX + name.upper()]
        for name in Settings.model_fields
        if ENV_PREFIX + name.upper() in env
    }
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{str(err['loc'][0]).upper() if err['loc'] else 'settings'}: "
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigurationError(f"Invalid setting — {problems}.") from exc
