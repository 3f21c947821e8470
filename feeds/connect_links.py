"""Staff connect links: signed, expiring, single-staff links to the self-service page.

A link carries a token that is a Fernet token (authenticated encryption, with its own key derived
from the app's secret key, feeds.keys.Sealer) of the staff member's id, their link nonce and the
issue time. Nothing is stored per link: the token proves itself, expires after `LINK_DAYS`, and
a new nonce (`revoke_connect_links`) makes every earlier link of that staff member invalid.

The invitation email builds its `{connect_url}` with `make_connect_token` and `connect_url`; the
self-service page reads it back with `read_connect_token`. Fernet rather than itsdangerous
because feeds/ stays free of the web framework's libraries (tests/test_architecture.py).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from feeds.errors import CalsyncError
from feeds.keys import Sealer
from models import Staff, utcnow

CONNECT_PURPOSE = "calsync staff connect link v1"
LINK_DAYS = 14


class ConnectLinkError(CalsyncError):
    """A connect link that is malformed, expired, revoked or of a deleted staff member."""


def connect_sealer(secret_key: str) -> Sealer:
    """The sealer of connect links: a key of its own, derived from the app's secret key."""
    return Sealer(secret_key, CONNECT_PURPOSE)


def make_connect_token(
    session: Session, staff: Staff, sealer: Sealer, now: datetime | None = None
) -> str:
    """A new link token for this staff member (gives them a nonce first if they have none)."""
    if not staff.connect_nonce:
        staff.connect_nonce = secrets.token_hex(16)
        session.flush()
    issued = int((now or utcnow()).timestamp())
    return sealer.seal(json.dumps({"s": staff.id, "n": staff.connect_nonce, "t": issued}))


def connect_url(base_url: str, token: str) -> str:
    return f"{base_url}/connect/{token}"


def link_expiry(issued: datetime, days: int = LINK_DAYS) -> datetime:
    return issued + timedelta(days=days)


def read_connect_token(
    session: Session,
    sealer: Sealer,
    token: str,
    *,
    max_age: timedelta = timedelta(days=LINK_DAYS),
    now: datetime | None = None,
) -> Staff:
    """The staff member a token belongs to; ConnectLinkError says why it does not work."""
    invalid = ConnectLinkError(
        "This link is not valid (any more). Ask your admin to send you a new one."
    )
    plain = sealer.open(token) if 0 < len(token) <= 1000 else None
    if plain is None:
        raise invalid
    try:
        data = json.loads(plain)
        staff_id, nonce, issued = int(data["s"]), str(data["n"]), int(data["t"])
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid from exc
    now = now or utcnow()
    if now.timestamp() - issued > max_age.total_seconds():
        raise ConnectLinkError("This link has expired. Ask your admin to send you a new one.")
    staff = session.get(Staff, staff_id)
    if staff is None or not staff.connect_nonce or not secrets.compare_digest(
        staff.connect_nonce, nonce
    ):
        raise invalid
    return staff


def revoke_connect_links(session: Session, staff: Staff) -> None:
    """Make every connect link issued to this staff member so far stop working."""
    staff.connect_nonce = secrets.token_hex(16)
    session.flush()
