"""Appointments: book, list, reschedule, cancel; and a staff member's availability."""

from __future__ import annotations

from datetime import timedelta

from calsync.feeds.scheduling import booking, directory
from calsync.feeds.scheduling.availability import find_availability
from calsync.models import Appointment
from calsync.web import db
from calsync.web.api import bp, current_company
from calsync.web.api.registry import api_route
from calsync.web.api.schemas import (
    AppointmentIn,
    AppointmentList,
    AppointmentOut,
    AppointmentQuery,
    AvailabilityOut,
    AvailabilityQuery,
    BusyPeriod,
    CustomerOut,
    Period,
    ReschedulePatch,
)


def appointment_out(appt: Appointment) -> AppointmentOut:
    c = appt.customer
    return AppointmentOut(
        id=appt.id,
        uid=appt.uid,
        sequence=appt.sequence,
        status=appt.status,
        staff_id=appt.staff_id,
        start=appt.start_at,
        end=appt.end_at,
        service=appt.service,
        location=appt.location,
        notes=appt.notes,
        customer=CustomerOut(id=c.id, name=c.name, email=c.email, phone=c.phone),
        created_at=appt.created_at,
        updated_at=appt.updated_at,
    )


@api_route(bp, "/appointments", "POST", summary="Book an appointment", tag="appointments",
           body=AppointmentIn, response=AppointmentOut, status=201, errors=(404, 409, 422),
           creates="appointment_id")
def create_appointment(body: AppointmentIn) -> AppointmentOut:
    session = db.session()
    appt = booking.book_appointment(
        session,
        current_company(),
        staff_id=body.staff_id,
        start=body.start,
        end=body.end,
        service=body.service,
        customer=booking.CustomerDetails(
            name=body.customer.name, email=body.customer.email, phone=body.customer.phone
        ),
        location=body.location,
        notes=body.notes,
    )
    session.commit()
    return appointment_out(appt)


@api_route(bp, "/appointments", "GET", summary="List appointments", tag="appointments",
           query=AppointmentQuery, response=AppointmentList, errors=(422,))
def list_appointments(query: AppointmentQuery) -> AppointmentList:
    rows = booking.list_appointments(
        db.session(), current_company(), staff_id=query.staff_id, start=query.start,
        end=query.end, limit=query.limit, offset=query.offset,
    )
    return AppointmentList(appointments=[appointment_out(a) for a in rows])


@api_route(bp, "/appointments/<int:appointment_id>", "GET", summary="Get an appointment",
           tag="appointments", response=AppointmentOut, errors=(404,))
def get_appointment(appointment_id: int) -> AppointmentOut:
    return appointment_out(booking.get_appointment(db.session(), current_company(), appointment_id))


@api_route(bp, "/appointments/<int:appointment_id>", "PATCH", summary="Reschedule an appointment",
           tag="appointments", body=ReschedulePatch, response=AppointmentOut, errors=(404, 409, 422))
def reschedule_appointment(appointment_id: int, body: ReschedulePatch) -> AppointmentOut:
    session = db.session()
    appt = booking.reschedule_appointment(
        session, current_company(), appointment_id, start=body.start, end=body.end
    )
    session.commit()
    return appointment_out(appt)


@api_route(bp, "/appointments/<int:appointment_id>/cancel", "POST", summary="Cancel an appointment",
           tag="appointments", response=AppointmentOut, errors=(404, 409))
def cancel_appointment(appointment_id: int) -> AppointmentOut:
    session = db.session()
    appt = booking.cancel_appointment(session, current_company(), appointment_id)
    session.commit()
    return appointment_out(appt)


@api_route(bp, "/staff/<int:staff_id>/availability", "GET", summary="Free slots of a staff member",
           tag="staff", query=AvailabilityQuery, response=AvailabilityOut, errors=(404, 422))
def staff_availability(staff_id: int, query: AvailabilityQuery) -> AvailabilityOut:
    session = db.session()
    staff = directory.get_staff(session, current_company(), staff_id)
    result = find_availability(
        session, staff, query.start, query.end, timedelta(minutes=query.duration),
        timedelta(minutes=query.step) if query.step else None,
    )
    return AvailabilityOut(
        slots=[Period(start=a, end=b) for a, b in result.slots],
        busy=[BusyPeriod(start=b.start, end=b.end, kind=b.kind) for b in result.busy],
        blocked=result.blocked,
    )
