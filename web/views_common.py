"""What the admin pages and the staff self-service page both use, so that neither blueprint
imports the other: content negotiation and a feed token's subscribe links."""

from __future__ import annotations

from flask import request

from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.publishing import tokens
from calsync.models import Company, FeedToken, Staff
from calsync.web import db


def wants_json() -> bool:
    """Requests from calsync.js ask for JSON; forms without JavaScript get pages."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def feed_rows(rows: list[FeedToken]) -> list[tuple[FeedToken, tokens.FeedLinks | None]]:
    """Each token with its subscribe links (None when the app's key can no longer open it)."""
    services = db.services()
    out = []
    for row in rows:
        plain = tokens.reveal_token(services.sealer, row)
        links = tokens.feed_links(services.settings.base_url, plain,
                                  name=tokens.feed_name(db.session(), row)) if plain else None
        out.append((row, links))
    return out


def two_way_for(company: Company, staff: Staff) -> bool:
    """Whether moves and deletions in this staff member's linked calendar change bookings: the
    company has two-way sync on and the staff member did not opt out (feeds/calendars/twoway.py
    two_way_enabled asks the same of one connection)."""
    return get_company_settings(company).bidirectional_sync and not staff.bidirectional_opt_out
