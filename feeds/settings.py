"""The one typed settings object, read from CALSYNC_* environment variables.

Each field documents its variable and default. `load_settings()` is called by the CLI and
wsgi.py; tests build `Settings(...)` directly. Nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from calsync.feeds.errors import ConfigurationError
from calsync.feeds.mail.mime import check_address
from calsync.feeds.mail.smtp import parse_smtp_url
from calsync.feeds.private_files import private_dir, private_file, write_secret_file

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
    feed_listen: bool = Field(
        default=True,
        description=(
            "CALSYNC_FEED_LISTEN: on PostgreSQL, keep each feed's version in memory and hear of "
            "changes by LISTEN/NOTIFY, so a 304 needs no database round trip. Set to false "
            "behind a connection pooler that does not deliver notifications (PgBouncer in "
            "transaction mode); every feed request then reads its version."
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
    fetch_allowed_ports: tuple[int, ...] = Field(
        default=(),
        description=(
            "CALSYNC_FETCH_ALLOWED_PORTS: ports besides 80 and 443 that calendar and CalDAV "
            "addresses may use, comma-separated (e.g. 8443,5232); no other port of a public "
            "address is ever connected to."
        ),
    )
    sync_lease_seconds: int = Field(
        default=300, ge=2, le=86_400,
        description=(
            "CALSYNC_SYNC_LEASE_SECONDS: how long a worker holds a connection while syncing it. "
            "A worker that dies mid-sync releases nothing; after this time the scheduler hands "
            "the connection to another worker. Must be longer than the fetch timeout."
        ),
    )
    # Google Calendar (issue 11, foundation): the provider's fixed hosts, settings so that tests
    # point them at a loopback contract fake (tests/fakes/google_calendar.py).
    google_api_base_url: str = Field(
        default="https://www.googleapis.com/calendar/v3",
        description="CALSYNC_GOOGLE_API_BASE_URL: Google Calendar API v3 root (change only for tests).",
    )
    google_token_url: str = Field(
        default="https://oauth2.googleapis.com/token",
        description="CALSYNC_GOOGLE_TOKEN_URL: Google's OAuth 2.0 token endpoint (change only for tests).",
    )
    google_revoke_url: str = Field(
        default="https://oauth2.googleapis.com/revoke",
        description="CALSYNC_GOOGLE_REVOKE_URL: Google's OAuth 2.0 revocation endpoint (only for tests).",
    )
    google_auth_url: str = Field(
        default="https://accounts.google.com/o/oauth2/v2/auth",
        description="CALSYNC_GOOGLE_AUTH_URL: Google's consent screen (change only for tests).",
    )
    # Microsoft Graph (issue 12, foundation): the same for Microsoft 365 / Outlook.com
    # (tests/fakes/microsoft_graph.py). The tenant is part of the identity platform's addresses.
    microsoft_graph_base_url: str = Field(
        default="https://graph.microsoft.com/v1.0",
        description="CALSYNC_MICROSOFT_GRAPH_BASE_URL: Microsoft Graph v1.0 root (change only for tests).",
    )
    microsoft_login_base_url: str = Field(
        default="https://login.microsoftonline.com",
        description=("CALSYNC_MICROSOFT_LOGIN_BASE_URL: the Microsoft identity platform; the token and "
                     "sign-in endpoints are <this>/<tenant>/oauth2/v2.0/... (change only for tests)."),
    )
    microsoft_tenant: str = Field(
        default="common", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9.-]+$",
        description=("CALSYNC_MICROSOFT_TENANT: `common` (work and personal accounts), `organizations`, "
                     "`consumers`, or your Entra tenant's id or domain for a single-tenant app."),
    )
    microsoft_ca_file: str | None = Field(
        default=None, min_length=1, max_length=1000,
        description=("CALSYNC_MICROSOFT_CA_FILE: a PEM file of the certificate authorities trusted for the "
                     "two addresses above instead of the system's; certificates are always verified "
                     "(only for tests: the loopback contract fake's own CA)."),
    )
    # The operator's OAuth clients (README "Google Calendar and Microsoft 365"). Unset: the
    # "Connect" buttons say "not set up" with the reason, never a broken button.
    google_client_id: str | None = Field(
        default=None, min_length=1, max_length=300,
        description="CALSYNC_GOOGLE_CLIENT_ID: the OAuth client id from your Google Cloud project.",
    )
    google_client_secret: SecretStr | None = Field(
        default=None,
        description="CALSYNC_GOOGLE_CLIENT_SECRET: that OAuth client's secret.",
    )
    microsoft_client_id: str | None = Field(
        default=None, min_length=1, max_length=300,
        description="CALSYNC_MICROSOFT_CLIENT_ID: the application (client) id of your Microsoft Entra app.",
    )
    microsoft_client_secret: SecretStr | None = Field(
        default=None,
        description="CALSYNC_MICROSOFT_CLIENT_SECRET: a client secret of that app.",
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

    password_hash_profile: Literal["production", "fast-for-tests"] = Field(
        default="production",
        description=(
            "CALSYNC_PASSWORD_HASH_PROFILE: cost of the Argon2 hashes of admin passwords. "
            "\"fast-for-tests\" makes each hash nearly free, and so guessable; only for test suites."
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

    @field_validator("fetch_allowed_ports", mode="before")
    @classmethod
    def _ports_are_numbers(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = tuple(int(part) for part in value.replace(" ", "").split(",") if part)
            except ValueError:
                raise ValueError("must be port numbers separated by commas, such as 8443,5232") from None
        if isinstance(value, list | tuple) and not all(isinstance(p, int) and 0 < p < 65536 for p in value):
            raise ValueError("must be port numbers between 1 and 65535")
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

    def prepare_data_dir(self) -> None:
        """Create the data folder readable by its owner only (0700), and the SQLite database
        file 0600 before SQLite opens it: SQLite gives its -wal, -shm and journal files the
        database file's permissions, so none of them is readable by other local users either.
        An existing folder or file of ours with wider permissions is tightened. Nothing is
        created when the database is elsewhere (PostgreSQL, or a file outside the folder)."""
        url = self.resolved_database_url
        if not url.startswith("sqlite:///") or ":memory:" in url:
            return
        database = Path(url[len("sqlite:///"):].split("?", 1)[0])
        if database.parent.resolve() != self.data_dir.resolve():
            return
        try:
            private_dir(self.data_dir)
            for path in (database, *_sqlite_companions(database)):
                private_file(path, create=path == database)
        except OSError as exc:
            raise ConfigurationError(
                f"The data folder {self.data_dir} (CALSYNC_DATA_DIR) cannot hold the database: "
                f"{exc.strerror or exc}. Point CALSYNC_DATA_DIR at a writable folder."
            ) from exc

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
            private_dir(self.data_dir)
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


def _sqlite_companions(database: Path) -> list[Path]:
    return [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment; fail with a sentence naming the bad variable."""
    env = dict(os.environ if environ is None else environ)
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    # The test suite's own knobs are named TEST_CALSYNC_*, outside this prefix: every CALSYNC_
    # variable is a setting of the service.
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
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
