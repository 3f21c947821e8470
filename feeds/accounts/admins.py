"""Admin users and API keys."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from calsync.feeds.accounts.keys import hash_token, new_token, same_hash
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.lookup import get_owned
from calsync.models import AdminUser, ApiKey, Company, utcnow

MIN_PASSWORD_LENGTH = 10
# Settings.password_hash_profile picks one. "production": Argon2id (RFC 9106) with argon2-cffi's
# defaults, about a third of a second per hash on purpose. "fast-for-tests": argon2-cffi's
# CHEAPEST parameters, only so that a test suite's hundreds of logins do not cost minutes; a
# login under production settings rehashes such a hash at production cost (check_needs_rehash).
PASSWORD_HASH_PROFILES = {
    "production": PasswordHasher(),
    "fast-for-tests": PasswordHasher.from_parameters(profiles.CHEAPEST),
}


def password_hasher(profile: str = "production") -> PasswordHasher:
    return PASSWORD_HASH_PROFILES[profile]


def _verify(hasher: PasswordHasher, stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
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


def create_admin(
    session: Session, company: Company, email: str, password: str, *, profile: str = "production"
) -> AdminUser:
    email = email.strip().lower()
    if "@" not in email:
        raise ValidationError("Give the admin's email address.", "email")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"The password needs at least {MIN_PASSWORD_LENGTH} characters.", "password"
        )
    if session.scalar(select(func.count()).where(AdminUser.email == email)):
        raise ValidationError(f"An admin with the email {email} already exists.", "email")
    password_hash = password_hasher(profile).hash(password)
    user = AdminUser(company_id=company.id, email=email, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def authenticate_admin(
    session: Session, email: str, password: str, *, profile: str = "production"
) -> AdminUser | None:
    hasher = password_hasher(profile)
    user = session.scalar(select(AdminUser).where(AdminUser.email == email.strip().lower()))
    if user is None:
        # Spend the same work on an unknown email, so timing does not tell which exist.
        _verify(hasher, _dummy_hash(profile), password)
        return None
    if not _verify(hasher, user.password_hash, password) or user.disabled_at is not None:
        return None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    user.last_login_at = utcnow()
    return user


def find_admin(session: Session, email: str) -> AdminUser:
    user = session.scalar(select(AdminUser).where(AdminUser.email == email.strip().lower()))
    if user is None:
        raise NotFoundError(f"There is no admin with the email {email.strip().lower()}.")
    return user


def session_id(user: AdminUser) -> str:
    """The id a login session carries: the admin's id and session version. Bumping the version
    (`end_sessions`) makes every session issued before it, copied cookies included, unknown."""
    return f"{user.id}:{user.session_version}"


def admin_of_session(session: Session, value: str) -> AdminUser | None:
    """The enabled admin whose current session id this is, or None (ended, disabled, garbage)."""
    user_id, _, version = value.partition(":")
    if not (user_id.isdigit() and version.isdigit()) or len(value) > 40:
        return None
    user = session.get(AdminUser, int(user_id))
    if user is None or user.disabled_at is not None or user.session_version != int(version):
        return None
    return user


def end_sessions(session: Session, user: AdminUser) -> None:
    """End every login session of this admin (logout, password change, disabling). One UPDATE
    that increments, so two ends at once both count."""
    session.execute(
        update(AdminUser).where(AdminUser.id == user.id)
        .values(session_version=AdminUser.session_version + 1)
        .execution_options(synchronize_session=False)
    )
    session.refresh(user, ["session_version"])


def change_password(
    session: Session, user: AdminUser, password: str, *, profile: str = "production"
) -> None:
    """A new password; every session of the admin ends (a thief's copy of a cookie too)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"The password needs at least {MIN_PASSWORD_LENGTH} characters.", "password"
        )
    user.password_hash = password_hasher(profile).hash(password)
    end_sessions(session, user)


def disable_admin(session: Session, user: AdminUser) -> None:
    """The admin can no longer log in, and their open sessions end now."""
    user.disabled_at = user.disabled_at or utcnow()
    end_sessions(session, user)


@lru_cache(maxsize=len(PASSWORD_HASH_PROFILES))
def _dummy_hash(profile: str) -> str:
    return password_hasher(profile).hash("calsync-timing-equaliser")


def create_api_key(session: Session, company: Company, name: str) -> tuple[ApiKey, str]:
    """A new key; the plain key is returned once and never stored."""
    if not name.strip():
        raise ValidationError("Give the API key a name, e.g. the system that will use it.", "name")
    key = "csk_" + new_token()
    row = ApiKey(company_id=company.id, name=name.strip(), key_hash=hash_token(key), prefix=key[:10])
    session.add(row)
    session.flush()
    return row, key


# Built once: every API request runs it (issue 17: building a statement cost about as much as
# running it). The key and its company in one statement, not a second one for the company.
_KEY_AND_COMPANY = (select(ApiKey, Company).join(Company, Company.id == ApiKey.company_id)
                    .where(ApiKey.key_hash == bindparam("digest")))


def find_api_key_company(session: Session, key: str) -> tuple[ApiKey, Company] | None:
    """The active key and its company; None for an unknown or revoked key (or one whose company
    is gone: the foreign key forbids it, the join makes sure)."""
    digest = hash_token(key)
    row = session.execute(_KEY_AND_COMPANY, {"digest": digest}).first()
    if row is None or not same_hash(row[0].key_hash, digest) or row[0].revoked_at is not None:
        return None
    return row[0], row[1]


def revoke_api_key(session: Session, company: Company, key_id: int) -> None:
    row = get_owned(session, ApiKey, key_id, company, "active API key", active_only=True)
    row.revoked_at = utcnow()
