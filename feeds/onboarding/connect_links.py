"""Staff connect links: signed, expiring, single-staff links to the self-service page.

A link carries a token that is a Fernet token (authenticated encryption, with its own key derived
from the app's secret key, feeds.keys.Sealer) of the staff member's id, their link nonce, the
issue time and, for a link sent in an invitation email, the invitation's id. Nothing secret is
stored per link: the token proves itself and expires after `LINK_DAYS`.

Two ways to stop links: a new nonce (`revoke_connect_links`) makes every earlier link of that
staff member invalid (and marks their invitations revoked); revoking one invitation
(feeds.invitations) stops only the link that names it, because reading a link checks its
invitation row. The invitation id in the token is also how the self-service page records that
an invitation was opened and used.

The invitation email builds its `{connect_url}` with `make_connect_token` and `connect_url`; the
self-service page reads it back with `read_connect_link`. Fernet rather than itsdangerous
because feeds/ stays free of the web framework's libraries (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.accounts.keys import Sealer
from calsync.feeds.errors import CalsyncError
from calsync.models import Invitation, Staff, utcnow

CONNECT_PURPOSE = "calsync staff connect link v1"
LINK_DAYS = 14


class ConnectLinkError(CalsyncError):
    """A connect link that is malformed, expired, revoked or of a deleted staff member."""


def connect_sealer(secret_key: str) -> Sealer:
    """The sealer of connect links: a key of its own, derived from the app's secret key."""
    return Sealer(secret_key, CONNECT_PURPOSE)


@dataclass(frozen=True)
class ConnectLink:
    """What a valid link token says: whose page it opens, and which invitation sent it."""

    staff: Staff
    invitation_id: int | None
    issued_at: datetime


def make_connect_token(
    session: Session,
    staff: Staff,
    sealer: Sealer,
    now: datetime | None = None,
    *,
    invitation_id: int | None = None,
) -> str:
    """A new link token for this staff member (gives them a nonce first if they have none);
    with `invitation_id`, the token names the invitation that carries it."""
    if not staff.connect_nonce:
        staff.connect_nonce = secrets.token_hex(16)
        session.flush()
    issued = int((now or utcnow()).timestamp())
    payload: dict[str, int | str] = {"s": staff.id, "n": staff.connect_nonce, "t": issued}
    if invitation_id is not None:
        payload["i"] = invitation_id
    return sealer.seal(json.dumps(payload))


def connect_url(base_url: str, token: str) -> str:
    return f"{base_url}/connect/{token}"


def link_expiry(issued: datetime, days: int = LINK_DAYS) -> datetime:
    return issued + timedelta(days=days)


def read_connect_link(
    session: Session,
    sealer: Sealer,
    token: str,
    *,
    max_age: timedelta = timedelta(days=LINK_DAYS),
    now: datetime | None = None,
) -> ConnectLink:
    """The staff member (and invitation) a token belongs to; ConnectLinkError says why it does
    not work."""
    invalid = ConnectLinkError("This link is not valid (any more). Ask your admin to send you a new one.")
    plain = sealer.open(token) if 0 < len(token) <= 1000 else None
    if plain is None:
        raise invalid
    try:
        data = json.loads(plain)
        staff_id, nonce, issued = int(data["s"]), str(data["n"]), int(data["t"])
        invitation_id = int(data["i"]) if data.get("i") is not None else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise invalid from exc
    return _check(session, staff_id, _nonce_digest(nonce), issued, invitation_id, max_age, now)


def _nonce_digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _check(
    session: Session,
    staff_id: int,
    nonce_digest: str,
    issued: int,
    invitation_id: int | None,
    max_age: timedelta,
    now: datetime | None,
) -> ConnectLink:
    """The link's staff member (and invitation) if the link is still good: not expired, the
    staff member's nonce unchanged (not revoked), its invitation not withdrawn."""
    invalid = ConnectLinkError("This link is not valid (any more). Ask your admin to send you a new one.")
    now = now or utcnow()
    if now.timestamp() - issued > max_age.total_seconds():
        raise ConnectLinkError("This link has expired. Ask your admin to send you a new one.")
    staff = session.get(Staff, staff_id)
    if staff is None or not staff.connect_nonce or not secrets.compare_digest(
        _nonce_digest(staff.connect_nonce), nonce_digest
    ):
        raise invalid
    if invitation_id is not None:
        invitation = session.get(Invitation, invitation_id)
        if invitation is None or invitation.staff_id != staff.id:
            raise invalid
        if invitation.revoked_at is not None:
            raise ConnectLinkError("This invitation was withdrawn. Ask your admin to send you a new one.")
    return ConnectLink(staff, invitation_id, datetime.fromtimestamp(issued, UTC))


def session_claim(link: ConnectLink) -> dict[str, int | str | None]:
    """What the self-service session keeps instead of the link token: the staff member's id,
    the invitation's id, the issue time and a digest of the nonce. Nothing in it opens the page
    elsewhere (it is not a link), and the server revokes it like the link: a new nonce, a
    withdrawn invitation or the link's age ends the session at its next request."""
    nonce = link.staff.connect_nonce or ""
    return {"s": link.staff.id, "i": link.invitation_id, "t": int(link.issued_at.timestamp()),
            "n": _nonce_digest(nonce)}


def read_session_claim(
    session: Session,
    claim: object,
    *,
    max_age: timedelta = timedelta(days=LINK_DAYS),
    now: datetime | None = None,
) -> ConnectLink:
    """The link a self-service session was opened with, checked again (see `session_claim`)."""
    if not isinstance(claim, dict):
        raise ConnectLinkError("This link is not valid (any more). Ask your admin to send you a new one.")
    try:
        staff_id, issued, digest = int(claim["s"]), int(claim["t"]), str(claim["n"])
        invitation_id = int(claim["i"]) if claim.get("i") is not None else None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConnectLinkError(
            "This link is not valid (any more). Ask your admin to send you a new one.") from exc
    return _check(session, staff_id, digest, issued, invitation_id, max_age, now)


def read_connect_token(
    session: Session,
    sealer: Sealer,
    token: str,
    *,
    max_age: timedelta = timedelta(days=LINK_DAYS),
    now: datetime | None = None,
) -> Staff:
    """The staff member a token belongs to; ConnectLinkError says why it does not work."""
    return read_connect_link(session, sealer, token, max_age=max_age, now=now).staff


def revoke_connect_links(session: Session, staff: Staff, now: datetime | None = None) -> None:
    """Make every connect link issued to this staff member so far stop working, and say so on
    their invitations (whose links are among them)."""
    staff.connect_nonce = secrets.token_hex(16)
    moment = now or utcnow()
    for invitation in session.scalars(
        select(Invitation).where(Invitation.staff_id == staff.id, Invitation.revoked_at.is_(None))
    ):
        invitation.revoked_at = moment
    session.flush()
