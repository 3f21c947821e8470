"""Feed tokens: issue, find by hash, revoke, and the subscribe URLs built from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from calsync.feeds.accounts.keys import Sealer, hash_token, new_token, same_hash
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.lookup import get_owned
from calsync.models import Company, FeedScope, FeedToken, Group, PrivacyLevel, Staff, utcnow

SCOPES = tuple(FeedScope)
PRIVACY_LEVELS = tuple(PrivacyLevel)
TOKEN_PURPOSE = "calsync feed token v1"  # noqa: S105 - a KDF label, not a secret
NAME_MAX = 200  # FeedToken.name
# Live tokens of one feed (one scope): enough for every device and person it is shared with;
# a cap so that a script (or a stolen API key) cannot fill the table with them.
MAX_TOKENS_PER_FEED = 20


@dataclass(frozen=True)
class FeedLinks:
    url: str
    webcal_url: str
    google_url: str
    outlook_url: str
    office365_url: str


def feed_links(base_url: str, token: str, *, name: str) -> FeedLinks:
    """The subscribe links of a feed. `name` is the feed's own (staff member, group or company,
    feed_name): Outlook.com and Microsoft 365 show it as the new calendar's name, where Apple and
    Google read the feed's X-WR-CALNAME."""
    url = f"{base_url}/feeds/{token}.ics"
    webcal = "webcal://" + url.split("://", 1)[1]
    query = "?url=" + quote(url, safe="") + "&name=" + quote(name, safe="")
    return FeedLinks(
        url=url,
        webcal_url=webcal,
        google_url="https://calendar.google.com/calendar/render?cid=" + quote(webcal, safe=""),
        outlook_url="https://outlook.live.com/calendar/0/addfromweb" + query,
        office365_url="https://outlook.office.com/calendar/0/addfromweb" + query,
    )


def feed_name(session: Session, row: FeedToken) -> str:
    """The name of the staff member, group or company a token's feed shows; the company's when
    its staff member or group is gone (such a token serves nothing anyway)."""
    found: Staff | Group | None = None
    if row.scope == "staff":
        found = session.get(Staff, row.scope_id)
    elif row.scope == "group":
        found = session.get(Group, row.scope_id)
    if found is not None and found.company_id == row.company_id:
        return found.name
    company = session.get(Company, row.company_id)
    return company.name if company is not None else "Calendar"


def scope_name(session: Session, company: Company, scope: str, scope_id: int) -> str:
    """The human name of a scope; raises NotFoundError when it does not exist in the company."""
    if scope == FeedScope.COMPANY:
        if scope_id != company.id:
            raise NotFoundError("That company does not exist.")
        return company.name
    model: type[Staff | Group] = Staff if scope == FeedScope.STAFF else Group
    return get_owned(session, model, scope_id, company, scope).name


def issue_feed_token(
    session: Session,
    company: Company,
    sealer: Sealer,
    *,
    scope: str,
    scope_id: int,
    privacy: str = "full",
    name: str | None = None,
) -> tuple[FeedToken, str]:
    """Create a token for a scope; returns the row and the token (the only time it is plain)."""
    if scope not in SCOPES:
        raise ValidationError(f"Scope must be one of {', '.join(SCOPES)}.", "scope")
    if privacy not in PRIVACY_LEVELS:
        raise ValidationError(f"Privacy must be one of {', '.join(PRIVACY_LEVELS)}.", "privacy")
    label = scope_name(session, company, scope, scope_id)
    _lock_feed(session, company, scope, scope_id)
    live = list(session.scalars(
        select(FeedToken.name).where(
            FeedToken.company_id == company.id, FeedToken.scope == scope,
            FeedToken.scope_id == scope_id, FeedToken.revoked_at.is_(None),
        )
    ))
    if len(live) >= MAX_TOKENS_PER_FEED:
        raise ValidationError(
            f"This feed already has {MAX_TOKENS_PER_FEED} links; revoke one it no longer needs "
            "before creating another.", "scope_id")
    if name and name.strip() in live:
        raise ValidationError(
            f"This feed already has a link named '{name.strip()}'; give the new one another name.",
            "name")
    token = new_token()
    row = FeedToken(
        company_id=company.id,
        scope=scope,
        scope_id=scope_id,
        privacy=privacy,
        name=name.strip() if name else _default_name(label, privacy, set(live)),
        token_hash=hash_token(token),
        token_encrypted=sealer.seal(token),
    )
    session.add(row)
    session.flush()
    return row, token


def _default_name(label: str, privacy: str, taken: set[str]) -> str:
    """"Zoë Müller (full)", or "Zoë Müller (full) 2" when that is taken: names stay unique per
    feed. A staff or group name may use all of the column, so it is shortened to fit (PostgreSQL
    refused the longer value: a 500 found by tests/system/test_schemathesis.py)."""
    for n in range(1, MAX_TOKENS_PER_FEED + 2):
        suffix = f" ({privacy})" + (f" {n}" if n > 1 else "")
        candidate = label[:NAME_MAX - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable: fewer live names than MAX_TOKENS_PER_FEED")


def _lock_feed(session: Session, company: Company, scope: str, scope_id: int) -> None:
    """Serialise token creation per feed, so the cap and the unique name hold under parallel
    requests: a no-op UPDATE of the feed's owner row takes its row lock on PostgreSQL and the
    write lock on SQLite before the live tokens are counted (as booking does, feeds/booking.py)."""
    model: type[Staff | Group | Company] = {"staff": Staff, "group": Group}.get(scope, Company)  # type: ignore[assignment]
    owner = model.id == scope_id
    if model is not Company:
        owner = owner & (model.company_id == company.id)  # type: ignore[union-attr]
    session.execute(
        update(model).where(owner).values(id=model.id).execution_options(synchronize_session=False)
    )


def find_feed_token(session: Session, token: str) -> FeedToken | None:
    """The live token row for a presented token, or None (unknown or revoked)."""
    digest = hash_token(token)
    row = session.scalar(select(FeedToken).where(FeedToken.token_hash == digest))
    # The index lookup already matched; compare again in constant time so no code path's
    # timing depends on how much of a guessed hash matched.
    if row is None or not same_hash(row.token_hash, digest) or row.revoked_at is not None:
        return None
    return row


def touch_feed_token(
    conn: Connection, token_id: int, last_used_at: datetime | None, every: timedelta
) -> bool:
    """Record use at most once per `every`, so polling clients do not turn every feed GET into
    a write. A conditional UPDATE: no read-modify-write race between processes. Returns whether
    it wrote (the caller then commits)."""
    now = utcnow()
    if last_used_at is not None and now - last_used_at < every:
        return False
    conn.execute(
        update(FeedToken)
        .where(FeedToken.id == token_id)
        .where((FeedToken.last_used_at.is_(None)) | (FeedToken.last_used_at < now - every))
        .values(last_used_at=now)
    )
    return True


def revoke_feed_token(session: Session, company: Company, token_id: int) -> FeedToken:
    row = get_owned(session, FeedToken, token_id, company, "active feed token", active_only=True)
    row.revoked_at = utcnow()
    session.flush()
    return row


def rotate_feed_token(
    session: Session, company: Company, sealer: Sealer, token_id: int
) -> tuple[FeedToken, str]:
    """Issue a new token with the old one's scope, privacy and name, and revoke the old one:
    everyone subscribed with the old URL loses access; the new URL is handed out again."""
    old = revoke_feed_token(session, company, token_id)
    return issue_feed_token(
        session, company, sealer, scope=old.scope, scope_id=old.scope_id, privacy=old.privacy,
        name=old.name,
    )


def list_feed_tokens(session: Session, company: Company) -> list[FeedToken]:
    return list(
        session.scalars(
            select(FeedToken)
            .where(FeedToken.company_id == company.id, FeedToken.revoked_at.is_(None))
            .order_by(FeedToken.scope, FeedToken.scope_id, FeedToken.id)
        )
    )


def reveal_token(sealer: Sealer, row: FeedToken) -> str | None:
    """The plain token for showing its URL again; None if the app key has changed."""
    return sealer.open(row.token_encrypted)


def ensure_default_tokens(session: Session, company: Company, sealer: Sealer) -> int:
    """Give every staff member, group and the company one full-privacy token if it has none."""
    have = {
        (scope, scope_id)
        for scope, scope_id in session.execute(
            select(FeedToken.scope, FeedToken.scope_id).where(
                FeedToken.company_id == company.id, FeedToken.revoked_at.is_(None)
            )
        )
    }
    wanted = [("company", company.id)]
    wanted += [
        ("staff", sid)
        for sid in session.scalars(select(Staff.id).where(Staff.company_id == company.id))
    ]
    wanted += [
        ("group", gid)
        for gid in session.scalars(select(Group.id).where(Group.company_id == company.id))
    ]
    created = 0
    for scope, scope_id in wanted:
        if (scope, scope_id) not in have:
            issue_feed_token(session, company, sealer, scope=scope, scope_id=scope_id)
            created += 1
    return created
