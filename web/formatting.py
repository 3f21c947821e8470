"""Jinja filters of the web pages: relative times ("3 minutes ago") and local dates."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Flask
from markupsafe import Markup

from calsync.models import utcnow

STATUS_LABELS = {"ok": "OK", "error": "Failing", "stale": "Stale", "pending": "Not synced yet"}
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


def plural(count: int, one: str, many: str | None = None) -> str:
    """'1 day', '2 days', '0 days': the noun agrees with the number."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def general_flash(category: str) -> bool:
    """A flash for the message area at the top of the page; "success@settings" is shown by the
    section it names instead (templates/admin/_macros.html flash_here), beside the form used."""
    return "@" not in category


def register_filters(app: Flask) -> None:
    app.add_template_filter(plural, "plural")
    app.add_template_test(general_flash, "general_flash")
    app.add_template_filter(ago, "ago")
    app.add_template_filter(time_ago, "time_ago")
    app.add_template_filter(local, "local")
    app.jinja_env.globals.update(STATUS_LABELS=STATUS_LABELS, ROLE_LABELS=ROLE_LABELS)
