"""Jinja filters of the web pages: relative times ("3 minutes ago") and local dates."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, flash, g
from markupsafe import Markup

from calsync.models import utcnow

STATUS_LABELS = {"ok": "OK", "error": "Failing", "stale": "Stale", "pending": "Not synced yet"}
APPOINTMENT_STATUS = {"confirmed": "Confirmed", "cancelled": "Cancelled"}  # an appointment's badge
NEVER_REACHED = "Not yet reachable"


def connection_status(conn: Any) -> tuple[str, str]:
    """A calendar connection's badge, (kind, label), the same on every page (its card, the staff
    list, Sync health, the in-place "Sync now" update): a calendar that has never synced and
    fails is "Not yet reachable", not "Failing", since it never worked; one that has never synced
    and not failed either is "Not synced yet"."""
    status = str(conn.status)
    if conn.last_success_at is None and status != "ok":
        if conn.last_error or status == "error":
            return "error", NEVER_REACHED
        return "pending", STATUS_LABELS["pending"]
    return status, STATUS_LABELS.get(status, status)
ROLE_LABELS = {
    "conflict": "Busy time",
    "linked": "Linked (bookings written here)",
    "additional": "Copy of bookings",
}


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'just now', '3 minutes ago', 'yesterday', '5 days ago'; 'never' for None."""
    if moment is None:
        return "never"
    seconds = int(((now or utcnow()) - moment).total_seconds())
    future = seconds < -30
    seconds = abs(seconds)
    if seconds < 45:
        return "just now"
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"),
                       (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = max(1, round(seconds / size))
            if unit == "day" and count == 1 and not future:
                return "yesterday"
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"


def time_ago(moment: datetime | None) -> Markup:
    """A <time> element: relative text, the exact UTC time as its tooltip."""
    if moment is None:
        return Markup("never")
    exact = moment.strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        moment.isoformat(), exact, ago(moment)
    )


def local(moment: datetime | None, tz: str = "UTC", fmt: str = "%a %d %b %Y, %H:%M") -> str:
    if moment is None:
        return ""
    return moment.astimezone(ZoneInfo(tz)).strftime(fmt)


# Letters that Unicode does not decompose into a base letter and a mark, sorted with the letter
# they are read as (ł with l, ø with o, ı with i, …), as a reader of a list expects.
_BASE_LETTERS = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "ı": "i", "ŀ": "l",
                               "æ": "ae", "œ": "oe", "þ": "th", "ŧ": "t", "ŋ": "n", "ĸ": "k"})


def name_key(name: str) -> tuple[str, str]:
    """A person's name as a sort key that needs no collation support (no ICU, no locale): accents
    and case ignored, so Łukasz comes before Zoë and é sorts with e; the name itself breaks ties."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    base = "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_BASE_LETTERS)
    return base, name


def plural(count: int, one: str, many: str | None = None) -> str:
    """'1 day', '2 days', '0 days': the noun agrees with the number."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def flash_at(message: str, kind: str, place: str) -> None:
    """A message shown beside what it is about rather than at the top of the page: `place` is the
    id of the section or card the page is sent to after the form (a redirect to "#<place>"), and
    flash_here(place) in templates/admin/_macros.html shows it there, where the person is looking."""
    flash(message, f"{kind}@{place}")


def mark_place(place: str) -> str:
    """Called by flash_here: this page shows the messages for `place` itself."""
    g.setdefault("flash_places", set()).add(place)
    return ""


def general_flash(category: str) -> bool:
    """A flash for the message area at the top of the page. "success@settings" is shown by the
    section it names instead (flash_here, beside the form used), unless this page has no such
    section (the card was removed meanwhile, say): then it is shown at the top, never lost.
    base.html renders the page's content before asking, so every flash_here has run by then."""
    _kind, at, place = category.partition("@")
    return not at or place not in g.get("flash_places", set())


def register_filters(app: Flask) -> None:
    app.add_template_filter(plural, "plural")
    app.add_template_test(general_flash, "general_flash")
    app.add_template_global(mark_place, "mark_place")
    app.add_template_filter(ago, "ago")
    app.add_template_filter(time_ago, "time_ago")
    app.add_template_filter(local, "local")
    app.jinja_env.globals.update(STATUS_LABELS=STATUS_LABELS, ROLE_LABELS=ROLE_LABELS,
                                 APPOINTMENT_STATUS=APPOINTMENT_STATUS)
    app.add_template_global(connection_status, "connection_status")
