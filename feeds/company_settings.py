"""Company-wide toggles: one validated model stored as JSON on the company row."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import webcolors
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError
from sqlalchemy.orm import Session

from calsync.models import Company, utcnow

MIN_STALE_HOURS = 1  # the smallest stale threshold; feeds.health.mark_stale relies on it
# RFC 7986 §5.9: COLOR's value is a CSS3 colour name; a client need read no other form.
CSS3_COLOUR_NAMES = frozenset(webcolors.names(webcolors.CSS3))
STORED = {"stored": True}  # validation context of settings read back from the database


def _css3_colour(value: Any, info: ValidationInfo) -> Any:
    name = value.strip().lower() if isinstance(value, str) else value
    if name is None or name == "":  # none, or a form's empty field
        return None
    if isinstance(name, str) and name in CSS3_COLOUR_NAMES:
        return name
    if info.context and info.context.get("stored"):
        # Saved before only names were taken (a #rrggbb): the feed goes without a colour
        # instead of every feed of the company failing; the admin sees it unset.
        return None
    raise PydanticCustomError(
        "css3_colour",
        "Give the feed colour as a CSS3 colour name, such as teal or cornflowerblue (RFC 7986 "
        "COLOR); calendar apps need read no other form. Leave it empty for none.",
    )


# The OpenAPI document lists the names, so schema-driven clients send only what is accepted.
CssColour = Annotated[
    str | None,
    BeforeValidator(_css3_colour),
    WithJsonSchema({"anyOf": [{"type": "string", "enum": [*sorted(CSS3_COLOUR_NAMES), ""]},
                              {"type": "null"}]}),
]


class CompanySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feed_window_past_days: int = Field(
        default=60, ge=0, le=3650, description="Days of past appointments a published feed shows."
    )
    feed_window_future_days: int = Field(
        default=365, ge=1, le=3650, description="Days of future appointments a published feed shows."
    )
    feed_refresh_minutes: int = Field(
        default=60,
        ge=5,
        le=10080,
        description=(
            "How often calendar apps are asked to refresh a feed (REFRESH-INTERVAL and "
            "X-PUBLISHED-TTL). Google and Outlook.com use their own schedule whatever this says."
        ),
    )
    show_cancelled: bool = Field(
        default=False,
        description=(
            "Keep cancelled appointments in feeds, marked STATUS:CANCELLED. Off by default "
            "because Outlook shows cancelled events as if they were still on."
        ),
    )
    feed_color: CssColour = Field(
        default=None,
        description="Optional calendar colour (RFC 7986 COLOR): a CSS3 colour name, e.g. teal.",
    )

    sync_window_past_days: int = Field(
        default=1, ge=0, le=60,
        description="Days back that staff members' own calendars are read for busy time.",
    )
    sync_window_future_days: int = Field(
        default=180, ge=7, le=730,
        description="Days ahead that staff members' own calendars are read for busy time.",
    )
    ics_subscriptions: bool = Field(
        default=True, description="Allow connecting calendars by their ICS address."
    )
    caldav_connections: bool = Field(
        default=True, description="Allow connecting CalDAV calendars (iCloud, Fastmail, Nextcloud, ...)."
    )
    default_sync_mode: Literal["realtime", "interval", "manual"] = Field(
        default="interval", description="Sync mode of a new connection unless another is chosen."
    )
    default_interval_minutes: int = Field(
        default=30, ge=5, le=10080, description="Minutes between syncs of an 'interval' connection."
    )
    alert_after_failures: int = Field(
        default=3, ge=1, le=100,
        description="Consecutive failed syncs of a connection before the admin is alerted.",
    )
    stale_after_hours: int = Field(
        default=24, ge=MIN_STALE_HOURS, le=24 * 30,
        description="Hours without a successful sync after which a connection counts as stale.",
    )
    stale_policy: Literal["keep", "block"] = Field(
        default="keep",
        description=(
            "What a stale connection does: 'keep' its last busy times (default), or 'block' "
            "booking the staff member until it syncs again."
        ),
    )
    bidirectional_sync: bool = Field(
        default=False,
        description=(
            "Apply moves and deletions that staff make in their linked calendar to the booking, "
            "and email the customer. Off: the booked time wins and the calendar is put back."
        ),
    )
    calendar_delete_action: Literal["cancel", "restore"] = Field(
        default="cancel",
        description=(
            "With two-way sync, what deleting a booking in the linked calendar does: 'cancel' the "
            "appointment (the customer is emailed) or 'restore' the event in the calendar."
        ),
    )
    cancelled_in_calendar: Literal["delete", "mark"] = Field(
        default="delete",
        description=(
            "What a cancelled appointment becomes in staff calendars: 'delete' the event, or "
            "'mark' it cancelled and keep it."
        ),
    )


def get_company_settings(company: Company) -> CompanySettings:
    return CompanySettings.model_validate(company.settings or {}, context=STORED)


def update_company_settings(
    session: Session, company: Company, changes: dict[str, Any]
) -> CompanySettings:
    """Validate and apply `changes`; every feed of the company gets a new version."""
    merged = get_company_settings(company).model_dump() | changes
    new = CompanySettings.model_validate(merged)
    company.settings = new.model_dump()
    bump_company_epoch(company)
    session.flush()
    return new


def bump_company_epoch(company: Company) -> None:
    """Give every feed of the company a new version and record when, as staff changes do
    (scheduling/booking.py mark_feed_changed): to the microsecond, never in the future."""
    company.feed_epoch = (company.feed_epoch or 0) + 1
    previous = company.feed_epoch_changed_at
    now = utcnow()
    company.feed_epoch_changed_at = max(now, previous) if previous else now
