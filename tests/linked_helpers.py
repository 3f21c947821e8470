"""A staff member with a linked calendar on a real CalDAV server, set up through the API as an
integration would: the one setup of the two-way sync tests (integration, faults, hostile
servers). Calendar-side edits are made as a calendar app makes them: a CalDAV PUT of the
changed event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars.sync import sync_connection
from calsync.models import LinkedItem
from tests.clock import day_at
from tests.conftest import Api
from tests.feed_helpers import iso

WEEK_NINE_TO_FIVE = {
    day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}


def at(days: int, hour: int, minute: int = 0) -> datetime:
    """A UTC instant `days` ahead at hour:minute."""
    return day_at(days, hour, minute)


class CalendarServer(Protocol):
    """What Linked needs of a CalDAV server: tests.servers.CalDAVServer (in process) and
    tests.hostile_servers.RadicaleProcess (a process of its own) both have it."""

    username: str
    password: str

    def url_of(self, slug: str = "work") -> str: ...

    def calendar(self, slug: str = "work") -> Any: ...


class Linked:
    """A staff member (UTC, working `working_hours`) whose calendar "work" on `server` is
    connected with the conflict and linked roles, synced once; two-way sync on unless told.
    `url` reaches the calendar another way (e.g. through a proxy in front of the server)."""

    def __init__(
        self,
        app: Flask,
        api: Api,
        server: CalendarServer,
        *,
        two_way: bool = True,
        working_hours: dict[str, list[list[str]]] = WEEK_NINE_TO_FIVE,
        url: str | None = None,
    ) -> None:
        self.app, self.api, self.server = app, api, server
        self.services = app.extensions["calsync"]
        self.calendar = server.calendar("work")
        api.patch("/settings", {"bidirectional_sync": two_way})
        self.staff = api.make_staff(working_hours=working_hours, timezone="UTC")
        resp = api.post(
            f"/staff/{self.staff['id']}/connections",
            {
                "kind": "caldav",
                "url": url or server.url_of("work"),
                "username": server.username,
                "password": server.password,
                "roles": ["conflict", "linked"],
                "sync_mode": "interval",
            },
        )
        assert resp.status_code == 201, resp.get_json()
        self.connection_id: int = resp.get_json()["id"]
        assert self.sync().status == "ok"

    def sync(self) -> Any:
        return sync_connection(self.services.sync, self.connection_id)

    def book(self, start: datetime, minutes: int = 60) -> dict[str, Any]:
        resp = self.api.book(self.staff["id"], iso(start), iso(start + timedelta(minutes=minutes)))
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()  # type: ignore[no-any-return]

    def appointment(self, appt_id: int) -> dict[str, Any]:
        return self.api.get(f"/appointments/{appt_id}").get_json()  # type: ignore[no-any-return]

    # --- the calendar side ------------------------------------------------------------------------

    def event(self, uid: str) -> Any:
        return self.calendar.event_by_uid(uid)

    def event_times(self, uid: str) -> tuple[datetime, datetime]:
        comp = self.event(uid).icalendar_component
        return comp.decoded("DTSTART").astimezone(UTC), comp.decoded("DTEND").astimezone(UTC)

    def move_in_calendar(self, uid: str, start: datetime, minutes: int = 60) -> None:
        """What a calendar app does when the staff member drags the event: PUT it changed."""
        event = self.event(uid)
        comp = event.icalendar_component
        comp["DTSTART"].dt = start
        comp["DTEND"].dt = start + timedelta(minutes=minutes)
        event.save()

    def calendar_uids(self) -> list[str]:
        """The UIDs in the calendar now (opened afresh: the server may have restarted)."""
        return sorted(str(e.icalendar_component["UID"]) for e in self.server.calendar("work").events())

    # --- our side -----------------------------------------------------------------------------------

    def item(self, appt_id: int) -> LinkedItem:
        with self.services.sessions() as s:
            item = s.scalar(select(LinkedItem).where(LinkedItem.appointment_id == appt_id))
            assert item is not None
            return item

    def items(self) -> list[LinkedItem]:
        with self.services.sessions() as s:
            return list(s.scalars(select(LinkedItem).order_by(LinkedItem.id)))

    def past_backoff(self) -> None:
        """Date every linked item's last attempt two hours back, past any retry pause."""
        with self.services.sessions.begin() as s:
            for item in s.scalars(select(LinkedItem)):
                item.updated_at = item.updated_at - timedelta(hours=2)
