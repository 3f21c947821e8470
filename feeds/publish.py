"""Published feeds: find a feed by token, compute its version cheaply, and render it.

The flow of a feed request (DESIGN.md): token → scope → version (one small query) → 304 if the
client has it → cached body, or render. A render reuses the cached VEVENT fragment of every
appointment whose revision did not change, so only changed appointments are serialised again.

Version: every change to an appointment bumps its staff member's feed_revision in the same
transaction; company-wide changes bump the company's feed_epoch. Revisions only grow, so the
sum of the revisions of the staff in a scope, with their count and the epoch, changes whenever
anything the feed shows changes — in whatever process or machine the change was made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.orm import Session, selectinload

from feeds.company_settings import CompanySettings, get_company_settings
from feeds.feed_cache import FeedCache
from feeds.feed_render import FOOTER, FRAGMENT_FORMAT, Variant, render_event, render_header
from feeds.tokens import find_feed_token
from models import (
    STATUS_CONFIRMED,
    Appointment,
    Company,
    FeedFragment,
    FeedToken,
    Group,
    Staff,
    group_member,
)


@dataclass(frozen=True)
class PublishedFeed:
    token: FeedToken
    company: Company
    settings: CompanySettings
    window: tuple[datetime, datetime]
    cache_key: str
    scope_key: str
    etag: str
    last_modified: datetime


def feed_window(settings: CompanySettings, now: datetime) -> tuple[datetime, datetime]:
    """The published window on whole UTC days, so it (and the version) moves once a day."""
    today = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
    return (
        today - timedelta(days=settings.feed_window_past_days),
        today + timedelta(days=settings.feed_window_future_days + 1),
    )


def _scope_staff_filter(scope: str, scope_id: int, company_id: int):  # type: ignore[no-untyped-def]
    if scope == "staff":
        return Staff.id == scope_id
    if scope == "group":
        members = select(group_member.c.staff_id).where(group_member.c.group_id == scope_id)
        return and_(Staff.company_id == company_id, Staff.id.in_(members))
    return Staff.company_id == company_id


def open_feed(session: Session, token: str, now: datetime) -> PublishedFeed | None:
    """The feed behind a token with its version, without rendering anything."""
    row = find_feed_token(session, token)
    if row is None:
        return None
    company = session.get(Company, row.company_id)
    if company is None:
        return None
    settings = get_company_settings(company)
    total, count, changed = session.execute(
        select(
            func.coalesce(func.sum(Staff.feed_revision), 0),
            func.count(Staff.id),
            func.max(Staff.feed_changed_at),
        ).where(_scope_staff_filter(row.scope, row.scope_id, company.id))
    ).one()
    if row.scope == "staff" and count == 0:
        return None  # the staff member was deleted
    window = feed_window(settings, now)
    scope_key = f"{row.scope}:{row.scope_id}:{row.privacy}"
    cache_key = (
        f"{scope_key}:f{FRAGMENT_FORMAT}:e{company.feed_epoch}:r{total}:n{count}"
        f":w{window[0]:%Y%m%d}"
    )
    if isinstance(changed, str):  # SQLite returns max() of a datetime column as text
        changed = datetime.fromisoformat(changed)
    moments = [company.feed_epoch_changed_at, window[0]]
    if changed is not None:
        moments.append(changed if changed.tzinfo else changed.replace(tzinfo=UTC))
    last_modified = max(moments).replace(microsecond=0)
    etag = '"' + hashlib.sha256(cache_key.encode()).hexdigest()[:32] + '"'
    return PublishedFeed(row, company, settings, window, cache_key, scope_key, etag, last_modified)


def _scope_title(session: Session, feed: PublishedFeed) -> tuple[str, str, list[str]]:
    """Calendar name, its X-WR-TIMEZONE, and every time zone its events use."""
    company, scope, scope_id = feed.company, feed.token.scope, feed.token.scope_id
    zones = list(
        session.scalars(
            select(Staff.timezone)
            .where(_scope_staff_filter(scope, scope_id, company.id))
            .distinct()
        )
    )
    if scope == "staff":
        staff = session.get(Staff, scope_id)
        assert staff is not None
        return f"{staff.name} · {company.name}", staff.timezone, zones
    if scope == "group":
        group = session.get(Group, scope_id)
        name = group.name if group is not None else "Group"
        return f"{name} · {company.name}", company.timezone, zones
    return company.name, company.timezone, zones


def _fragments(session: Session, feed: PublishedFeed) -> list[str]:
    """VEVENT texts of the scope's appointments in the window, rendering only stale ones."""
    token = feed.token
    variant = Variant(token.privacy, names_staff=token.scope != "staff")
    start, end = feed.window
    scope_staff = select(Staff.id).where(
        _scope_staff_filter(token.scope, token.scope_id, feed.company.id)
    )
    query = (
        select(Appointment.id, Appointment.revision, FeedFragment.revision_key, FeedFragment.body)
        .outerjoin(
            FeedFragment,
            and_(
                FeedFragment.appointment_id == Appointment.id,
                FeedFragment.variant == variant.key,
            ),
        )
        .where(
            Appointment.staff_id.in_(scope_staff),
            Appointment.start_at < end,
            Appointment.end_at > start,
        )
        .order_by(Appointment.start_at, Appointment.id)
    )
    if not feed.settings.show_cancelled:
        query = query.where(Appointment.status == STATUS_CONFIRMED)
    rows = session.execute(query).all()
    bodies: dict[int, str] = {}
    stale: dict[int, str] = {}
    for appt_id, revision, key, body in rows:
        wanted = f"{FRAGMENT_FORMAT}.{revision}"
        if key == wanted:
            bodies[appt_id] = body
        else:
            stale[appt_id] = wanted
    if stale:
        bodies.update(_render_stale(session, variant, stale))
    return [bodies[row[0]] for row in rows]


def _render_stale(session: Session, variant: Variant, stale: dict[int, str]) -> dict[int, str]:
    rendered: dict[int, str] = {}
    ids = list(stale)
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        appointments = session.scalars(
            select(Appointment)
            .where(Appointment.id.in_(chunk))
            .options(selectinload(Appointment.staff), selectinload(Appointment.customer))
        ).all()
        session.execute(
            delete(FeedFragment).where(
                FeedFragment.appointment_id.in_(chunk), FeedFragment.variant == variant.key
            )
        )
        new_rows = []
        for appt in appointments:
            body = render_event(appt, variant)
            rendered[appt.id] = body
            new_rows.append(
                {
                    "appointment_id": appt.id,
                    "variant": variant.key,
                    "revision_key": stale[appt.id],
                    "body": body,
                }
            )
        if new_rows:
            session.execute(insert(FeedFragment), new_rows)
    return rendered


def render_feed(session: Session, feed: PublishedFeed) -> bytes:
    name, tz, zones = _scope_title(session, feed)
    header = render_header(
        name=name,
        timezone=tz,
        timezones=zones,
        refresh=timedelta(minutes=feed.settings.feed_refresh_minutes),
        color=feed.settings.feed_color,
        window=feed.window,
    )
    return (header + "".join(_fragments(session, feed)) + FOOTER).encode("utf-8")


def feed_body(session: Session, feed: PublishedFeed, cache: FeedCache) -> bytes:
    """The feed's bytes: from the cache, or rendered and cached. The caller commits."""
    body = cache.load(session, feed.cache_key)
    if body is None:
        body = render_feed(session, feed)
        cache.store(session, feed.cache_key, feed.scope_key, body, feed.last_modified)
    return body
