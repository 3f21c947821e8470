"""The company toggles as a form, built from CompanySettings' own schema.

Each field's type, limits, choices and one-line description come from the pydantic model, so a
setting added there appears on the page without touching this module; LABELS and SECTIONS only
make the known ones read better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from werkzeug.datastructures import MultiDict

from calsync.feeds.company_settings import CompanySettings

LABELS = {
    "feed_window_past_days": "Past appointments in feeds",
    "feed_window_future_days": "Future appointments in feeds",
    "feed_refresh_minutes": "Feed refresh interval",
    "show_cancelled": "Show cancelled appointments",
    "feed_color": "Feed colour",
    "sync_window_past_days": "Read staff calendars back",
    "sync_window_future_days": "Read staff calendars ahead",
    "ics_subscriptions": "ICS subscriptions",
    "caldav_connections": "CalDAV connections",
    "default_sync_mode": "Default sync mode",
    "default_interval_minutes": "Default sync interval",
    "alert_after_failures": "Alert after",
    "stale_after_hours": "Stale after",
    "stale_policy": "Stale calendars",
    "bidirectional_sync": "Two-way sync",
    "calendar_delete_action": "Deletion in a staff calendar",
    "cancelled_in_calendar": "Cancelled appointments in staff calendars",
}
FEED_SETTINGS = ("feed_", "show_cancelled")  # what the published feeds show (name prefixes)
SECTIONS = [
    ("Published feeds", FEED_SETTINGS),
    ("Two-way sync", ("bidirectional", "calendar_delete", "cancelled_in_calendar")),
    ("Staff calendars", ("sync_window", "ics_", "caldav_", "default_sync", "default_interval")),
    ("Sync health", ("alert_", "stale_")),
]
OTHER_SECTION = "More settings"
UNITS = {"days": "days", "minutes": "minutes", "hours": "hours", "seconds": "seconds",
         "failures": "failed syncs"}
UNIT_ONE = {"days": "day", "minutes": "minute", "hours": "hour", "seconds": "second",
            "failures": "failed sync"}
WORDS = {"ics": "ICS", "caldav": "CalDAV", "url": "URL"}
# The page speaks to an admin, the model's descriptions to API clients: where a description
# names an RFC property or a raw option value, the page says the same thing in plain words.
HELP = {
    "feed_refresh_minutes": (
        "How often calendar apps are asked to check a feed for changes. Google and Outlook.com "
        "check on their own schedule whatever this says."
    ),
    "show_cancelled": (
        "Keep cancelled appointments in feeds, shown as cancelled. Off by default because "
        "Outlook shows cancelled events as if they were still on."
    ),
    "feed_color": "Optional colour for this calendar in the apps that show one.",
    "default_sync_mode": (
        "How often a newly connected calendar is read, unless it is set otherwise. “As soon as it "
        "changes” needs a server that sends change notifications (Google, Microsoft 365); other "
        "calendars are then read about every minute."
    ),
    "default_interval_minutes": "Time between two reads of a calendar that is read on a schedule.",
    "stale_policy": (
        "What happens while a calendar has not synced for longer than the time above: keep "
        "using its last known busy times, or stop bookings of that staff member until it syncs."
    ),
    "bidirectional_sync": (
        "Moves and deletions that staff make in their linked calendar change the booking, and "
        "the customer is emailed. Off: the booked time wins and the calendar is put back."
    ),
    "calendar_delete_action": (
        "When a staff member deletes a booking from their linked calendar: cancel the "
        "appointment and email the customer, or put the booking back. Needs two-way sync."
    ),
    "cancelled_in_calendar": "What a cancelled appointment becomes in staff members' calendars.",
}
# Option values are API words; the page shows what each one does, short enough for a phone's
# list (333 px) to show it whole; the help text below the list says the rest.
CHOICE_LABELS = {
    "feed_color": {"": "None"},
    "default_sync_mode": {
        "realtime": "As soon as it changes",
        "interval": "On a schedule (every few minutes)",
        "manual": "Only when someone presses Sync now",
    },
    "stale_policy": {
        "keep": "Keep the last known busy times",
        "block": "Stop bookings until it syncs again",
    },
    "calendar_delete_action": {
        "cancel": "Cancel it and email the customer",
        "restore": "Put the booking back in the calendar",
    },
    "cancelled_in_calendar": {
        "delete": "Remove it from the calendar",
        "mark": "Keep it, marked as cancelled",
    },
}
# A setting that only means something while another (on/off) one is on: shown disabled then.
DEPENDS_ON = {"calendar_delete_action": "bidirectional_sync"}


@dataclass
class SettingField:
    name: str
    label: str
    help: str
    kind: str  # bool | choice | int | number | text
    value: Any
    choices: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    optional: bool = False
    unit: str | None = None
    unit_one: str | None = None
    choice_labels: dict[str, str] = field(default_factory=dict)
    depends_on: str | None = None
    disabled: bool = False
    error: str | None = None  # what to fix, shown beside the field after a refused Save

    @property
    def unit_text(self) -> str | None:
        """'1 day', '2 days': the unit agrees with the number shown, which after a refused Save is
        the text typed ("1", " 1 ", "1.0"), not a number."""
        return self.unit_one if self.unit_one and _is_one(self.value) else self.unit


def _is_one(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return float(str(value).strip()) == 1
    except ValueError:
        return False


def _label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    words = name.split("_")
    if words[-1] in UNITS and len(words) > 1:
        words = words[:-1]
    text = " ".join(WORDS.get(w, w) for w in words)
    return text[:1].upper() + text[1:]


def _unit(name: str) -> str | None:
    last = name.rsplit("_", 1)[-1]
    return UNITS.get(last) if "_" in name else None


def _unit_key(name: str) -> str:
    return name.rsplit("_", 1)[-1]


def _section(name: str) -> str:
    for title, prefixes in SECTIONS:
        if name.startswith(prefixes):
            return title
    return OTHER_SECTION


def setting_fields(current: CompanySettings) -> list[tuple[str, list[SettingField]]]:
    """Every setting as a form field, grouped into sections in the model's order."""
    properties = CompanySettings.model_json_schema()["properties"]
    sections: dict[str, list[SettingField]] = {title: [] for title, _ in SECTIONS}
    sections[OTHER_SECTION] = []
    for name, info in properties.items():
        unit = _unit(name)
        spec = dict(info)
        optional = False
        if "anyOf" in spec:  # X | None
            options = [o for o in spec["anyOf"] if o.get("type") != "null"]
            optional = len(options) < len(spec["anyOf"])
            spec.update(options[0] if len(options) == 1 else {})
        kind = {"boolean": "bool", "integer": "int", "number": "number"}.get(spec.get("type", ""), "text")
        choices = [str(c) for c in spec.get("enum", [])]
        value = getattr(current, name, spec.get("default"))
        if choices:
            kind = "choice"
            if optional:
                # An optional choice offers "none" first, selected while the value is unset.
                choices = ["", *(c for c in choices if c != "")]
                value = "" if value is None else value
        numeric = kind in ("int", "number")
        sections[_section(name)].append(SettingField(
            name=name, label=_label(name), help=HELP.get(name) or spec.get("description") or "", kind=kind,
            value=value, choices=choices,
            minimum=spec.get("minimum"), maximum=spec.get("maximum"), pattern=spec.get("pattern"),
            optional=optional, unit=unit if numeric else None,
            unit_one=UNIT_ONE.get(_unit_key(name)) if numeric and unit else None,
            choice_labels=CHOICE_LABELS.get(name, {}), depends_on=DEPENDS_ON.get(name),
        ))
    values = {f.name: f.value for fields in sections.values() for f in fields}
    for fields in sections.values():
        for f in fields:
            f.disabled = bool(f.depends_on) and not values.get(f.depends_on or "")
    return [(title, fields) for title, fields in sections.items() if fields]


def parse_settings_form(form: MultiDict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The changes a submitted settings form asks for, and per setting what to fix in it.

    Only the settings the page showed (listed in its `fields` input) are read, so a checkbox of
    a setting added after the page was loaded is not taken as switched off.
    """
    shown = set(form.getlist("fields"))
    changes: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for _title, fields in setting_fields(CompanySettings()):
        for f in fields:
            if f.name not in shown:
                continue
            if f.kind != "bool" and f.name not in form:
                # A disabled control (a two-way option while two-way sync is off) is not
                # submitted (HTML: disabled controls are not successful): keep its value.
                continue
            raw = form.get(f.name, "").strip()
            if f.kind == "bool":
                changes[f.name] = f.name in form
            elif f.kind in ("int", "number"):
                try:
                    changes[f.name] = int(raw) if f.kind == "int" else float(raw)
                except ValueError:
                    problems[f.name] = "Enter a number."
            else:
                changes[f.name] = raw if raw or not f.optional else None
    return changes, problems


def _plain(error: Any) -> str:
    """pydantic's message in the words of the page ("Enter 5 or more.")."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"Enter {ctx.get('ge')} or more."
    if kind == "greater_than":
        return f"Enter more than {ctx.get('gt')}."
    if kind == "less_than_equal":
        return f"Enter {ctx.get('le')} or less."
    if kind == "less_than":
        return f"Enter less than {ctx.get('lt')}."
    if kind in ("literal_error", "enum"):
        return "Choose one of the options in the list."
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return message if message.endswith(".") else message + "."


def describe_errors(exc: PydanticValidationError) -> dict[str, str]:
    """{"feed_refresh_minutes": "Enter 5 or more."}: one sentence per setting to fix."""
    out: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        out.setdefault(name, _plain(error))
    return out


def refused_fields(form: MultiDict[str, str], current: CompanySettings,
                   problems: dict[str, str]) -> list[tuple[str, list[SettingField]]]:
    """The form after a refused Save: what was typed stays in each field, beside its error, so
    nothing is lost (nothing was saved)."""
    sections = setting_fields(current)
    shown = set(form.getlist("fields"))
    for _title, fields in sections:
        for f in fields:
            f.error = problems.get(f.name)
            if f.name not in shown:
                continue
            if f.kind == "bool":
                f.value = f.name in form
            elif f.name in form:
                f.value = form.get(f.name, "")
    values = {f.name: f.value for _t, fields in sections for f in fields}
    for _title, fields in sections:
        for f in fields:
            f.disabled = bool(f.depends_on) and not values.get(f.depends_on or "")
    return sections


def label_of(name: str) -> str:
    return _label(name) if name else "Settings"
