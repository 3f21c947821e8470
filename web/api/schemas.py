"""Request and response schemas of the JSON API (pydantic 2). The OpenAPI document is built
from these same classes, so documentation and validation cannot drift apart."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
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
    WithJsonSchema,
)
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

from calsync.models import (
    MAX_KEY,
    AllDayPolicy,
    AppointmentStatus,
    ConflictResolution,
    ConflictStatus,
    ConnectionStatus,
    FeedScope,
    OutboxStatus,
    PrivacyLevel,
    Role,
    SyncMode,
)


def _choices(enum: type[StrEnum]) -> WithJsonSchema:
    """The enum's values inline, {"type": "string", "enum": [...]}, where pydantic would write a
    $ref to a shared definition: query parameters are documented inline (openapi.py), and the
    document reads as it did when these were Literals."""
    return WithJsonSchema({"type": "string", "enum": [m.value for m in enum]})


# The states and kinds of models/enums.py as the API takes and gives them.
AppointmentState = Annotated[AppointmentStatus, _choices(AppointmentStatus)]
Scope = Annotated[FeedScope, _choices(FeedScope)]
Privacy = Annotated[PrivacyLevel, _choices(PrivacyLevel)]
ConnectionRole = Annotated[Role, _choices(Role)]
Sync = Annotated[SyncMode, _choices(SyncMode)]
AllDay = Annotated[AllDayPolicy, _choices(AllDayPolicy)]
ConnectionState = Annotated[ConnectionStatus, _choices(ConnectionStatus)]
ConflictState = Annotated[ConflictStatus, _choices(ConflictStatus)]
Keep = Annotated[ConflictResolution, _choices(ConflictResolution)]
EmailState = Annotated[OutboxStatus, _choices(OutboxStatus)]


def _one_line(value: str) -> str:
    """Names reach feed titles, calendar names and email headers, where a line break or a
    control character (RFC 5545 §3.1 allows HTAB only) does harm: refused, not silently changed."""
    if not value.isprintable() and any(ch < " " or "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029"
                                       for ch in value):
        raise PydanticCustomError(
            "one_line", "Write the name on one line, without line breaks or control characters")
    return value


# What the stripping and _one_line enforce, for the document (JSON Schema, ECMA-262 regex; the
# classes are spelled out because \s differs between ECMA, Python and pydantic-core): Unicode
# White_Space around the name, which pydantic-core strips (Rust's str::trim: not \x1c-\x1f,
# unlike Python's str.strip) before it counts, then 1 to 200 characters that begin and end
# visible, and no control characters.
_STRIPPED = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_VISIBLE = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_ONE_LINE = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
ONE_LINE_PATTERN = rf"^{_STRIPPED}*{_VISIBLE}({_ONE_LINE}{{0,198}}{_VISIBLE})?{_STRIPPED}*$"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                 AfterValidator(_one_line),
                 WithJsonSchema({"type": "string", "minLength": 1, "pattern": ONE_LINE_PATTERN})]


def _no_controls(value: str) -> str:
    """Free text (notes, a location) may have line breaks and tabs; other control characters
    are refused: PostgreSQL cannot store NUL at all, and none of them belongs in a calendar."""
    if not value.isprintable() and any((ch < " " and ch not in "\t\r\n") or "\x7f" <= ch <= "\x9f"
                                       for ch in value):
        raise PydanticCustomError(
            "control_character", "Remove the control characters from the text; line breaks and tabs are fine")
    return value


# What _no_controls takes, for the document: line breaks and tabs, no other control character.
FREE_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
Location = Annotated[str, StringConstraints(max_length=500), AfterValidator(_no_controls),
                     WithJsonSchema({"type": "string", "maxLength": 500, "pattern": FREE_TEXT_PATTERN})]
Notes = Annotated[str, StringConstraints(max_length=5000), AfterValidator(_no_controls),
                  WithJsonSchema({"type": "string", "maxLength": 5000, "pattern": FREE_TEXT_PATTERN})]


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


# The document states the years _within_calendar takes (1900 to 9998) as a pattern on the
# date-time; the UTC offset can still move a moment at either edge out of range (rare, 422).
YEARS_1900_TO_9998 = r"^(19\d\d|[2-8]\d{3}|9[0-8]\d\d|99[0-8]\d|999[0-8])-"
Moment = Annotated[AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(_within_calendar),
                   WithJsonSchema({"type": "string", "format": "date-time",
                                   "pattern": YEARS_1900_TO_9998})]


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


# JSON Schema cannot compare two fields; these rules of feeds.scheduling (check_range,
# MAX_DURATION) are stated in words, and tests/system/test_schemathesis.py draws by them.
APPOINTMENT_END = "ISO 8601 with a UTC offset; after start, at most 24 hours later."
RANGE_END = "ISO 8601 with a UTC offset; after start, at most 366 days later."


class AppointmentIn(Strict):
    staff_id: Id
    start: Moment = Field(description="ISO 8601 with a UTC offset.")
    end: Moment = Field(description=APPOINTMENT_END)
    service: Name
    customer: CustomerIn
    location: Location | None = None
    notes: Notes | None = None


class ReschedulePatch(Strict):
    start: Moment = Field(description="ISO 8601 with a UTC offset.")
    end: Moment = Field(description=APPOINTMENT_END)


class AppointmentOut(BaseModel):
    id: int
    uid: str
    sequence: int
    status: AppointmentState
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
    start: Moment = Field(description="ISO 8601 with a UTC offset.")
    end: Moment = Field(description=RANGE_END)
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

class FeedIn(Strict):
    scope: Scope
    scope_id: Id
    privacy: Privacy = PrivacyLevel.FULL
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
