"""Admin users and API keys."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from calsync.feeds.accounts.keys import hash_token, new_token, same_hash
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.models import AdminUser, ApiKey, Company, utcnow

MIN_PASSWORD_LENGTH = 10
# Argon2id (RFC 9106) with argon2-cffi's defaults.
_hasher = PasswordHasher()


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def get_or_create_company(session: Session, name: str = "My company", timezone: str = "UTC") -> Company:
    """The install's company: the first one, created when there is none."""
    company = session.scalar(select(Company).order_by(Company.id).limit(1))
    if company is None:
        company = Company(name=name, timezone=timezone, settings={})
        session.add(company)
        session.flush()
    return company


def create_admin(session: Session, company: Company, email: str, password: str) -> AdminUser:
    email = email.strip().lower()
    if "@" not in email:
        raise ValidationError("Give the admin's email address.", "email")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"The password needs at least {MIN_PASSWORD_LENGTH} characters.", "password"
        )
    if session.scalar(select(func.count()).where(AdminUser.email == email)):
        raise ValidationError(f"An admin with the email {email} already exists.", "email")
    user = AdminUser(company_id=company.id, email=email, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    return user


def authenticate_admin(session: Session, email: str, password: str) -> AdminUser | None:
    user = session.scalar(select(AdminUser).where(AdminUser.email == email.strip().lower()))
    if user is None:
        # Spend the same work on an unknown email, so timing does not tell which exist.
        _verify(_dummy_hash(), password)
        return None
    if not _verify(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    return user


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("calsync-timing-equaliser")


def create_api_key(session: Session, company: Company, name: str) -> tuple[ApiKey, str]:
    """A new key; the plain key is returned once and never stored."""
    if not name.strip():
        raise ValidationError("Give the API key a name, e.g. the system that will use it.", "name")
    key = "csk_" + new_token()
    row = ApiKey(company_id=company.id, name=name.strip(), key_hash=hash_token(key), prefix=key[:10])
    session.add(row)
    session.flush()
    return row, key


def find_api_key(session: Session, key: str) -> ApiKey | None:
    digest = hash_token(key)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or not same_hash(row.key_hash, digest) or row.revoked_at is not None:
        return None
    return row


def revoke_api_key(session: Session, company: Company, key_id: int) -> None:
    row = session.get(ApiKey, key_id)
    if row is None or row.company_id != company.id or row.revoked_at is not None:
        raise NotFoundError(f"There is no active API key with id {key_id}.")
    row.revoked_at = utcnow()
