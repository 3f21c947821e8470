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
    "bidirectional_sync": "Bidirectional synchronisation",
    "calendar_delete_action": "Deletion in a staff calendar",
    "cancelled_in_calendar": "Cancelled appointments in staff calendars",
}
SECTIONS = [
    ("Published feeds", ("feed_", "show_cancelled")),
    ("Two-way sync", ("bidirectional", "calendar_delete", "cancelled_in_calendar")),
    ("Staff calendars", ("sync_window", "ics_", "caldav_", "default_sync", "default_interval")),
    ("Sync health", ("alert_", "stale_")),
]
OTHER_SECTION = "More settings"
UNITS = {"days": "days", "minutes": "minutes", "hours": "hours", "seconds": "seconds",
         "failures": "failed syncs"}
WORDS = {"ics": "ICS", "caldav": "CalDAV", "url": "URL"}


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
        spec = dict(info)
        optional = False
        if "anyOf" in spec:  # X | None
            options = [o for o in spec["anyOf"] if o.get("type") != "null"]
            optional = len(options) < len(spec["anyOf"])
            spec.update(options[0] if len(options) == 1 else {})
        kind = {"boolean": "bool", "integer": "int", "number": "number"}.get(spec.get("type", ""), "text")
        if "enum" in spec:
            kind = "choice"
        sections[_section(name)].append(SettingField(
            name=name, label=_label(name), help=spec.get("description", ""), kind=kind,
            value=getattr(current, name, spec.get("default")), choices=[str(c) for c in spec.get("enum", [])],
            minimum=spec.get("minimum"), maximum=spec.get("maximum"), pattern=spec.get("pattern"),
            optional=optional, unit=_unit(name) if kind in ("int", "number") else None,
        ))
    return [(title, fields) for title, fields in sections.items() if fields]


def parse_settings_form(form: MultiDict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The changes a submitted settings form asks for, and sentences about unreadable values.

    Only the settings the page showed (listed in its `fields` input) are read, so a checkbox of
    a setting added after the page was loaded is not taken as switched off.
    """
    shown = set(form.getlist("fields"))
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for _title, fields in setting_fields(CompanySettings()):
        for f in fields:
            if f.name not in shown:
                continue
            raw = form.get(f.name, "").strip()
            if f.kind == "bool":
                changes[f.name] = f.name in form
            elif f.kind in ("int", "number"):
                try:
                    changes[f.name] = int(raw) if f.kind == "int" else float(raw)
                except ValueError:
                    problems.append(f"{f.label}: enter a number.")
            else:
                changes[f.name] = raw if raw or not f.optional else None
    return changes, problems


def describe_errors(exc: PydanticValidationError) -> list[str]:
    """'Feed refresh interval: Input should be greater than or equal to 5', one per problem."""
    out = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        out.append(f"{_label(name) if name else 'Settings'}: {error['msg']}.")
    return out
