"""Request and response schemas of the JSON API (pydantic 2). The OpenAPI document is built
from these same classes, so documentation and validation cannot drift apart."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

from calsync.models import MAX_KEY

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Clock = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WorkingHours = dict[Day, list[tuple[Clock, Clock]]]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64, pattern=r"^[0-9+() ./-]*$")]
TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64)]

# Primary keys are INTEGER: 32-bit on PostgreSQL (64-bit on SQLite). Larger ids cannot exist,
# so the API answers 404 or 422 instead of letting the driver overflow.
MAX_ID = MAX_KEY
Id = Annotated[int, Field(ge=1, le=MAX_ID)]

# Far enough from datetime.min/max that moving a moment into any time zone, and a day either
# side of it (working hours are computed per local day), cannot overflow.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _within_calendar(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise PydanticCustomError("date_range", "Give a moment between the years 1900 and 9998")
    return value


def _iso_8601(value: Any) -> Any:
    """The document says format date-time; pydantic alone would also take a number (or a
    numeric query string such as "0.5") as seconds since 1970."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.match(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise PydanticCustomError(
        "datetime_format",
        "Give a date and time in ISO 8601 with a UTC offset, e.g. 2027-01-11T10:00:00+01:00")


Moment = Annotated[AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(_within_calendar)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _drop_default(schema: JsonDict) -> None:
    schema.pop("default", None)


def unchanged() -> Any:
    """Default of a PATCH field: left out means "keep it"; an explicit null is refused."""
    return Field(default=None, json_schema_extra=_drop_default)


# --- staff and groups -----------------------------------------------------------------------


class StaffIn(Strict):
    name: Name
    email: EmailStr
    timezone: TimeZoneName | None = Field(
        default=None, description="IANA time zone; the company's when left out."
    )
    working_hours: WorkingHours | None = Field(
        default=None,
        description='Weekly hours in the staff member\'s zone, e.g. {"mon": [["09:00","17:00"]]}; '
        "Monday to Friday 09:00–17:00 when left out.",
    )


class StaffPatch(Strict):
    name: Name = unchanged()
    email: EmailStr = unchanged()
    timezone: TimeZoneName = unchanged()
    working_hours: WorkingHours = unchanged()


class StaffOut(BaseModel):
    id: int
    name: str
    email: str
    timezone: str
    working_hours: WorkingHours
    group_ids: list[int]


class StaffList(BaseModel):
    staff: list[StaffOut]


class GroupIn(Strict):
    name: Name
    staff_ids: list[Id] = Field(default_factory=list)


class GroupPatch(Strict):
    name: Name = unchanged()
    staff_ids: list[Id] = unchanged()


class GroupOut(BaseModel):
    id: int
    name: str
    staff_ids: list[int]


class GroupList(BaseModel):
    groups: list[GroupOut]


# --- appointments ---------------------------------------------------------------------------


class CustomerIn(Strict):
    name: Name
    email: EmailStr | None = None
    phone: Phone | None = None


class CustomerOut(BaseModel):
    id: int
    name: str
    email: str | None
    phone: str | None


class AppointmentIn(Strict):
    staff_id: Id
    start: Moment = Field(description="ISO 8601 with a UTC offset.")
    end: Moment = Field(description="ISO 8601 with a UTC offset.")
    service: Name
    customer: CustomerIn
    location: Annotated[str, StringConstraints(max_length=500)] | None = None
    notes: Annotated[str, StringConstraints(max_length=5000)] | None = None


class ReschedulePatch(Strict):
    start: Moment
    end: Moment


class AppointmentOut(BaseModel):
    id: int
    uid: str
    sequence: int
    status: Literal["confirmed", "cancelled"]
    staff_id: int
    start: datetime
    end: datetime
    service: str
    location: str | None
    notes: str | None
    customer: CustomerOut
    created_at: datetime
    updated_at: datetime


class AppointmentList(BaseModel):
    appointments: list[AppointmentOut]


class AppointmentQuery(Strict):
    staff_id: Id | None = None
    start: Moment | None = None
    end: Moment | None = None
    limit: int = Field(default=500, ge=1, le=5000)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


class AvailabilityQuery(Strict):
    start: Moment
    end: Moment
    duration: int = Field(default=30, ge=1, le=1440, description="Slot length in minutes.")
    step: int | None = Field(
        default=None, ge=5, le=1440, description="Minutes between slot starts; the duration when left out."
    )


class Period(BaseModel):
    start: datetime
    end: datetime


class BusyPeriod(Period):
    kind: str


class AvailabilityOut(BaseModel):
    slots: list[Period]
    busy: list[BusyPeriod]
    blocked: str | None = Field(
        default=None,
        description="Why no slot is offered at all: a calendar connection that has not synced yet "
        "(pending), or a stale one when the company blocks booking then.",
    )


# --- feeds ----------------------------------------------------------------------------------

Scope = Literal["staff", "group", "company"]
Privacy = Literal["full", "limited", "busy"]


class FeedIn(Strict):
    scope: Scope
    scope_id: Id
    privacy: Privacy = "full"
    name: Name | None = None


class FeedOut(BaseModel):
    token_id: int
    scope: Scope
    scope_id: int
    name: str
    privacy: Privacy
    url: str | None = Field(description="null when the app's secret key changed since issue.")
    webcal_url: str | None
    google_url: str | None
    outlook_url: str | None
    office365_url: str | None
    created_at: datetime
    last_used_at: datetime | None


class FeedList(BaseModel):
    feeds: list[FeedOut]


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    error: str
    field: str | None = None
    errors: list[ErrorDetail] | None = None
