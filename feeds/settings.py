"""The one typed settings object, read from CALSYNC_* environment variables.

Each field documents its variable and default. `load_settings()` is called by the CLI and
wsgi.py; tests build `Settings(...)` directly. Nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from feeds.errors import ConfigurationError

ENV_PREFIX = "CALSYNC_"


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
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.data_dir / "secret_key"
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return self.model_copy(update={"secret_key": key_file.read_text().strip()})


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment; fail with a sentence naming the bad variable."""
    env = dict(os.environ if environ is None else environ)
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    # Variables that only the tests read are allowed beside the settings.
    known |= {"CALSYNC_TEST_DATABASE_URL", "CALSYNC_TEST_REDIS_URL"}
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigurationError(
            f"Unknown setting {', '.join(unknown)}. Known settings: {', '.join(sorted(known))}."
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
            f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"Invalid setting — {problems}.") from exc
