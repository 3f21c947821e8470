"""Appointments: list with filters, book, reschedule, cancel (source "admin") and history, with
times on the staff member's clock."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.scheduling.booking import CustomerDetails, book_appointment
from calsync.models import Appointment, AppointmentChange, Company, Staff
from tests.admin_helpers import Browser, text_of
from tests.conftest import Api

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def staff(api: Api) -> dict[str, Any]:
    return api.make_staff()


def workday(after_days: int = 3) -> date:
    """A Monday-to-Friday date at least `after_days` ahead (the default working hours)."""
    day = datetime.now(BERLIN).date() + timedelta(days=after_days)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def form(staff_id: int, day: date, start: str = "10:00", end: str = "10:30", **kw: str) -> dict[str, Any]:
    body = {"staff_id": staff_id, "date": day.isoformat(), "start": start, "end": end,
            "service": "Colour & style", "customer_name": "Chloé Lefèvre",
            "customer_email": "chloe@example.com", "customer_phone": "+33 1 23"}
    body.update(kw)
    return body


def appointments(app: Flask) -> list[Appointment]:
    with app.extensions["calsync"].sessions() as session:
        return list(session.scalars(select(Appointment).order_by(Appointment.id)))


def history(app: Flask, appointment_id: int) -> list[tuple[str, str]]:
    with app.extensions["calsync"].sessions() as session:
        return [(c.action, c.source) for c in session.scalars(
            select(AppointmentChange).where(AppointmentChange.appointment_id == appointment_id)
            .order_by(AppointmentChange.id))]


def test_book_on_the_staff_members_clock(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    day = workday()
    assert "New appointment" in text_of(admin.get("/appointments/new"))
    resp = admin.post("/appointments/new", form(staff["id"], day, location="Room 2", notes="Quiet room"))
    [item] = appointments(app)
    assert resp.headers["Location"] == f"/appointments/{item.id}"
    ten = datetime.combine(day, datetime.min.time().replace(hour=10), BERLIN)
    assert item.start_at == ten.astimezone(UTC)
    assert item.end_at - item.start_at == timedelta(minutes=30)
    assert (item.service, item.location, item.notes) == ("Colour & style", "Room 2", "Quiet room")
    assert history(app, item.id) == [("booked", "admin")]
    html = text_of(admin.get(f"/appointments/{item.id}"))
    assert "Booked Colour &amp; style for Chloé Lefèvre." in html
    assert "10:00–10:30 (Europe/Berlin) with Zoë Müller" in html
    assert "Booked by an admin for" in html and "chloe@example.com" in html


@pytest.mark.parametrize(("changes", "message"), [
    ({"start": "07:00", "end": "07:30"}, "does not work at that time"),
    ({"end": "09:00"}, "The end time must be after the start time."),
    ({"date": "someday"}, "Give the start as a date and a time"),
    ({"service": " "}, "Name the service"),
    ({"customer_name": ""}, "Give the customer&#39;s name"),
    ({"staff_id": ""}, "Choose the staff member"),
    ({"staff_id": "999"}, "There is no staff member with id 999"),
])
def test_refused_bookings_keep_the_form_and_say_why(app: Flask, admin: Browser, staff: dict[str, Any],
                                                    changes: dict[str, str], message: str) -> None:
    body = form(staff["id"], workday()) | changes
    resp = admin.post("/appointments/new", body)
    assert resp.status_code == 422
    html = text_of(resp)
    assert message in html
    assert 'value="+33 1 23"' in html  # what was typed is still there
    assert appointments(app) == []


def test_a_taken_slot_is_refused(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    day = workday()
    admin.post("/appointments/new", form(staff["id"], day))
    resp = admin.post("/appointments/new", form(staff["id"], day, start="10:15", end="10:45"))
    assert resp.status_code == 422 and "already has an appointment at that time" in text_of(resp)
    assert len(appointments(app)) == 1


def test_list_with_filters(app: Flask, admin: Browser, api: Api, staff: dict[str, Any]) -> None:
    other = api.make_staff(name="Søren Ødegård", email="s@example.com", timezone="America/New_York")
    first, later = workday(3), workday(20)
    admin.post("/appointments/new", form(staff["id"], first, customer_name="Early Bird"))
    admin.post("/appointments/new", form(staff["id"], later, customer_name="Late Comer"))
    admin.post("/appointments/new", form(other["id"], first, customer_name="New Yorker"))
    html = text_of(admin.get("/appointments"))
    assert all(name in html for name in ("Early Bird", "Late Comer", "New Yorker"))
    # Times on each staff member's clock, with the zone named where it differs from the company's.
    assert re.search(r"10:00–10:30</a> <abbr class=\"muted\" title=\"America/New_York\">E[SD]T</abbr>", html)
    only = text_of(admin.get(f"/appointments?staff={staff['id']}"))
    assert "Early Bird" in only and "Late Comer" in only and "New Yorker" not in only
    window = text_of(admin.get(f"/appointments?from={first.isoformat()}&to={first.isoformat()}"))
    assert "Early Bird" in window and "New Yorker" in window and "Late Comer" not in window
    empty = text_of(admin.get("/appointments?from=2001-01-01&to=2001-01-31"))
    assert "No appointments in these dates" in empty
    # Nonsense dates fall back to the default window instead of failing.
    assert admin.get("/appointments?from=yesterday&to=2001-13-45").status_code == 200


def test_reschedule_and_cancel_with_history(app: Flask, admin: Browser, staff: dict[str, Any]) -> None:
    day = workday()
    admin.post("/appointments/new", form(staff["id"], day))
    [item] = appointments(app)
    page = f"/appointments/{item.id}"
    resp = admin.post(f"{page}/reschedule", {"date": day.isoformat(), "start": "14:00", "end": "15:00"},
                      page=page)
    assert resp.headers["Location"] == page
    [moved] = appointments(app)
    assert moved.start_at.astimezone(BERLIN).hour == 14 and moved.sequence == 1
    html = text_of(admin.get(page))
    assert "Appointment moved." in html and "Moved by an admin from" in html
    refused = admin.post(f"{page}/reschedule", {"date": day.isoformat(), "start": "20:00", "end": "21:00"},
                         page=page)
    assert refused.status_code == 422 and "does not work at that time" in text_of(refused)
    admin.post(f"{page}/cancel", page=page)
    [cancelled] = appointments(app)
    assert cancelled.status == "cancelled" and cancelled.sequence == 2
    html = text_of(admin.get(page))
    assert "Appointment cancelled." in html and "Cancelled by an admin." in html
    assert "Move appointment" not in html  # a cancelled appointment cannot be moved
    assert history(app, item.id) == [("booked", "admin"), ("rescheduled", "admin"), ("cancelled", "admin")]
    admin.post(f"{page}/cancel", page=page)
    assert "already cancelled" in text_of(admin.get(page))
    listing = text_of(admin.get("/appointments"))
    assert 'class="is-cancelled"' in listing


def test_history_names_where_changes_came_from(app: Flask, admin: Browser, api: Api,
                                               staff: dict[str, Any]) -> None:
    day = workday()
    start = datetime.combine(day, datetime.min.time().replace(hour=11), BERLIN)
    resp = api.book(staff["id"], start.isoformat(), (start + timedelta(minutes=30)).isoformat())
    html = text_of(admin.get(f"/appointments/{resp.get_json()['id']}"))
    assert "Booked by the API for" in html


def test_another_companys_appointments_are_404(app: Flask, admin: Browser) -> None:
    with app.extensions["calsync"].sessions.begin() as session:
        other = Company(name="Other", timezone="UTC", settings={})
        session.add(other)
        session.flush()
        member = Staff(company_id=other.id, name="Stranger", email="s@example.com", timezone="UTC",
                       working_hours={"mon": [["00:00", "24:00"]], "tue": [["00:00", "24:00"]],
                                      "wed": [["00:00", "24:00"]], "thu": [["00:00", "24:00"]],
                                      "fri": [["00:00", "24:00"]], "sat": [["00:00", "24:00"]],
                                      "sun": [["00:00", "24:00"]]})
        session.add(member)
        session.flush()
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        item = book_appointment(session, other, staff_id=member.id, start=start,
                                end=start + timedelta(minutes=30), service="Secret",
                                customer=CustomerDetails(name="Hidden Customer"))
        item_id = item.id
    assert admin.get(f"/appointments/{item_id}").status_code == 404
    admin.post(f"/appointments/{item_id}/cancel")
    admin.post(f"/appointments/{item_id}/reschedule",
               {"date": "2030-01-07", "start": "10:00", "end": "11:00"})
    assert appointments(app)[0].status == "confirmed"
    assert "Hidden Customer" not in text_of(admin.get("/appointments?from=2000-01-01&to=2100-01-01"))
    html = text_of(admin.get("/appointments/new"))
    assert "Stranger" not in html


@pytest.mark.parametrize("path", ["/appointments/new", "/appointments/{a}/reschedule",
                                  "/appointments/{a}/cancel"])
def test_forms_without_csrf_token_are_refused(app: Flask, admin: Browser, staff: dict[str, Any],
                                              path: str) -> None:
    day = workday()
    admin.post("/appointments/new", form(staff["id"], day))
    [item] = appointments(app)
    resp = admin.client.post(path.format(a=item.id), data=form(staff["id"], day, start="14:00", end="14:30"))
    assert resp.status_code == 400
    [same] = appointments(app)
    assert (same.start_at, same.status, same.sequence) == (item.start_at, item.status, item.sequence)
