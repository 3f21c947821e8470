"""Staff invitations ("Invite to sync"): send, re-send and revoke the email an admin wrote
(feeds.invitation_text says what it contains), and record what became of its link.

- `render_invitation` fills in the placeholders and adds the subscribe links, the steps for
  each calendar app and an honest line on how often it refreshes (templates/email/invitation.*).
- `send_invitation` writes the Invitation row and its outbox email in the caller's transaction.
  The connect link names the invitation (feeds.connect_links), so the self-service page can
  record when it was opened (`record_opened`) and when a calendar was connected through it
  (`record_used`).

Re-sending makes a new invitation (new row, new email, new link valid for LINK_DAYS from now)
rather than sending the old one again: each email keeps its own delivery status and its own
opened/used times, and a resend after the link expired needs a fresh link anyway. The earlier
link keeps working until it expires or is revoked. Revoking stops that invitation's link only;
"Revoke all links" (feeds.connect_links.revoke_connect_links) stops every link of the staff member.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.accounts.keys import Sealer
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import ValidationError
from calsync.feeds.lookup import get_owned
from calsync.feeds.mail.mime import Party, build_message, one_line, render
from calsync.feeds.mail.notifications import zone_of
from calsync.feeds.mail.outbox import add_email, mail_identity
from calsync.feeds.onboarding.connect_links import LINK_DAYS, connect_url, make_connect_token
from calsync.feeds.onboarding.invitation_text import (
    MAX_SUBJECT,
    PREVIEW_CONNECT_TOKEN,
    Draft,
    calendar_apps,
    check_draft,
    fill_html,
    fill_text,
)
from calsync.feeds.publishing import tokens
from calsync.models import (
    Company,
    FeedScope,
    Invitation,
    InvitationState,
    OutboxEmail,
    OutboxKind,
    PrivacyLevel,
    Staff,
    utcnow,
)

# A feed URL or connect link (with or without scheme) in text written outside the sealed message.
SECRET_LINK = re.compile(r"\S*/(?:feeds|connect)/\S+")


@dataclass(frozen=True)
class InviteKeys:
    """What building an invitation needs besides the session: the public base URL, the sealer
    that opens stored feed tokens (feeds.tokens) and the one of connect links."""

    base_url: str
    feed_sealer: Sealer
    link_sealer: Sealer


@dataclass(frozen=True)
class RenderedInvitation:
    subject: str
    text: str
    html: str


def staff_feed_links(session: Session, company: Company, staff: Staff, keys: InviteKeys) -> tokens.FeedLinks:
    """The subscribe links of the staff member's own feed: a full-privacy token if there is one
    (it is their own bookings), else their oldest live token that can still be shown."""
    rows = [
        row
        for row in tokens.list_feed_tokens(session, company)
        if row.scope == FeedScope.STAFF and row.scope_id == staff.id
    ]
    for row in sorted(rows, key=lambda r: (r.privacy != PrivacyLevel.FULL, r.id)):
        plain = tokens.reveal_token(keys.feed_sealer, row)
        if plain:
            return tokens.feed_links(keys.base_url, plain, name=staff.name)
    raise ValidationError(
        f"{staff.name} has no feed link to send. Create a link under Calendar sync (New link "
        f"next to {staff.name}), then send the invitation.",
        "feed",
    )


def render_invitation(
    session: Session,
    company: Company,
    staff: Staff,
    draft: Draft,
    keys: InviteKeys,
    *,
    link: str | None = None,
    expires: datetime | None = None,
) -> RenderedInvitation:
    """Subject, text and HTML of the email. Without `link` (a preview) the connect address is
    a stand-in: a real link is only made when the invitation is sent."""
    links = staff_feed_links(session, company, staff, keys)
    link = link or connect_url(keys.base_url, PREVIEW_CONNECT_TOKEN)
    expires = expires or utcnow() + timedelta(days=LINK_DAYS)
    values = {
        "company": one_line(company.name),
        "staff_name": one_line(staff.name),
        "feed_url": links.url,
        "webcal_url": links.webcal_url,
        "connect_url": link,
    }
    subject = one_line(fill_text(draft.subject_parts, values), MAX_SUBJECT)
    local_expiry = expires.astimezone(zone_of(staff, company))
    context = {
        "subject": subject,
        "company": values["company"],
        "staff_name": values["staff_name"],
        "body_text": fill_text(draft.body_parts, values),
        "body_html": fill_html(draft.body_parts, values),
        "apps": calendar_apps(links),
        "feed_url": links.url,
        "connect_url": link,
        "expires": f"{local_expiry.day} {local_expiry:%B %Y}",
        "refresh_minutes": get_company_settings(company).feed_refresh_minutes,
    }
    return RenderedInvitation(
        subject, render("invitation.txt", **context), render("invitation.html", **context)
    )


def send_invitation(
    session: Session,
    company: Company,
    staff: Staff,
    draft: Draft,
    keys: InviteKeys,
    *,
    created_by: int | None = None,
    now: datetime | None = None,
) -> Invitation:
    """Write the invitation and its email (kind "invitation") into the caller's transaction:
    both are committed together or not at all, and the email goes out after the commit."""
    now = now or utcnow()
    invitation = Invitation(
        company_id=company.id,
        staff_id=staff.id,
        email=draft.to,
        subject=draft.subject,
        body=draft.body,
        created_by=created_by,
        sent_at=now,
        expires_at=now + timedelta(days=LINK_DAYS),
    )
    session.add(invitation)
    session.flush()  # the id goes into the link and the dedupe key
    token = make_connect_token(session, staff, keys.link_sealer, now, invitation_id=invitation.id)
    mail = render_invitation(
        session,
        company,
        staff,
        draft,
        keys,
        link=connect_url(keys.base_url, token),
        expires=invitation.expires_at,
    )
    identity = mail_identity(session)
    email = add_email(
        session,
        OutboxEmail(
            company_id=company.id,
            kind=OutboxKind.INVITATION,
            dedupe_key=f"invitation:{invitation.id}",
            to_address=draft.to,
            # The outbox row's subject is not sealed: links an admin put into it are left out.
            subject=SECRET_LINK.sub("[link]", mail.subject)[:300],
            created_at=now,
            message=build_message(
                sender=Party(company.name, identity.from_address),
                recipient=Party(staff.name, draft.to),
                subject=mail.subject,
                text=mail.text,
                html=mail.html,
                date=now,
            ),
        ),
        # The body holds the connect link and the feed URL: sealed until sent, dropped after.
        secret=True,
    )
    assert email is not None  # the key names a row created in this transaction
    session.flush()
    invitation.outbox_email_id = email.id
    return invitation


def get_invitation(session: Session, company: Company, invitation_id: int) -> Invitation:
    return get_owned(session, Invitation, invitation_id, company, "invitation")


def resend_invitation(
    session: Session,
    company: Company,
    invitation_id: int,
    keys: InviteKeys,
    *,
    created_by: int | None = None,
    now: datetime | None = None,
) -> Invitation:
    """The same email again as a new invitation with a fresh link (see the module docstring)."""
    old = get_invitation(session, company, invitation_id)
    staff = session.get(Staff, old.staff_id)
    assert staff is not None  # invitations go with their staff member (ON DELETE CASCADE)
    draft = check_draft(old.email, old.subject, old.body)
    return send_invitation(session, company, staff, draft, keys, created_by=created_by, now=now)


def revoke_invitation(
    session: Session, company: Company, invitation_id: int, now: datetime | None = None
) -> Invitation:
    """Stop this invitation's link (an open self-service page ends at its next request)."""
    invitation = get_invitation(session, company, invitation_id)
    if invitation.revoked_at is None:
        invitation.revoked_at = now or utcnow()
    return invitation


def list_invitations(
    session: Session, company: Company, staff_id: int
) -> list[tuple[Invitation, OutboxEmail | None]]:
    """A staff member's invitations, newest first, each with its email (for its delivery)."""
    rows = session.execute(
        select(Invitation, OutboxEmail)
        .outerjoin(OutboxEmail, OutboxEmail.id == Invitation.outbox_email_id)
        .where(Invitation.company_id == company.id, Invitation.staff_id == staff_id)
        .order_by(Invitation.id.desc())
    )
    return [(row[0], row[1]) for row in rows]


def link_state(invitation: Invitation, now: datetime | None = None) -> InvitationState:
    """Whether the invitation's link still opens the page."""
    if invitation.revoked_at is not None:
        return InvitationState.REVOKED
    if invitation.expires_at <= (now or utcnow()):
        return InvitationState.EXPIRED
    return InvitationState.ACTIVE


def record_opened(session: Session, invitation_id: int, now: datetime | None = None) -> None:
    """The first visit through the invitation's link (later visits change nothing)."""
    invitation = session.get(Invitation, invitation_id)
    if invitation is not None and invitation.opened_at is None:
        invitation.opened_at = now or utcnow()


def record_used(session: Session, invitation_id: int, now: datetime | None = None) -> None:
    """The first calendar connected through the invitation's link."""
    invitation = session.get(Invitation, invitation_id)
    if invitation is not None and invitation.used_at is None:
        invitation.used_at = now or utcnow()
        invitation.opened_at = invitation.opened_at or invitation.used_at
