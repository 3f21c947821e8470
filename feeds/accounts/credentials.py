"""Stored secrets of connections (CalDAV passwords, secret calendar URLs, OAuth tokens), sealed with
authenticated encryption under a key that is not in the database.

MultiFernet: the first key seals, every key opens, so a key can be rotated in: put the new key
first, re-seal everything (`rotate_all`), then drop the old key.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.errors import ConfigurationError
from calsync.feeds.private_files import private_dir, write_secret_file
from calsync.models import CompanyAccount, Connection, OutboxEmail

KEY_FILE = "credentials_key"


class CredentialsError(ConfigurationError):
    """A sealed secret cannot be opened with the configured keys."""


class Vault:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigurationError("CALSYNC_CREDENTIALS_KEY: at least one key is needed.")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "CALSYNC_CREDENTIALS_KEY: each key must be a Fernet key (32 url-safe base64 bytes); "
                "make one with `calsync rotate-credentials-key --print-new-key`."
            ) from exc

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise CredentialsError(
                "A stored password or calendar address cannot be decrypted with the configured "
                "credentials key; restore the previous key (CALSYNC_CREDENTIALS_KEY)."
            ) from exc

    def reseal(self, sealed: str) -> str:
        return self._fernet.rotate(sealed.encode()).decode()


def parse_keys(value: str) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()]


def load_or_create_keys(configured: str | None, data_dir: Path) -> list[str]:
    """Keys from CALSYNC_CREDENTIALS_KEY, else from the data dir, generated on first use."""
    if configured:
        return parse_keys(configured)
    path = data_dir / KEY_FILE
    if not path.exists():
        private_dir(data_dir)
        write_secret_file(path, Fernet.generate_key().decode() + "\n")
    return parse_keys(path.read_text())


def rotate_all(session: Session, vault: Vault) -> int:
    """Re-seal every stored secret with the vault's first key; returns how many rows changed."""
    count = 0
    for conn in session.scalars(select(Connection)):
        conn.url_sealed = vault.reseal(conn.url_sealed)
        if conn.password_sealed:
            conn.password_sealed = vault.reseal(conn.password_sealed)
        if conn.tokens_sealed:  # Google / Microsoft OAuth tokens (feeds.calendars.provider_access)
            conn.tokens_sealed = vault.reseal(conn.tokens_sealed)
        count += 1
    # Company-wide provider accounts: a service-account key, an app's client secret.
    for account in session.scalars(select(CompanyAccount)):
        account.credentials_sealed = vault.reseal(account.credentials_sealed)
        count += 1
    # Emails waiting in the outbox with secret links are sealed with the same keys
    # (feeds.mail.outbox); once delivered they hold nothing sealed.
    for email in session.scalars(select(OutboxEmail).where(OutboxEmail.message_sealed.is_(True))):
        if email.message is not None:  # always, for a sealed email: drafts are never sealed
            email.message = vault.reseal(email.message.decode("ascii")).encode("ascii")
        count += 1
    return count


def new_key() -> str:
    return Fernet.generate_key().decode()
