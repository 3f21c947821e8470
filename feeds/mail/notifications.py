"""What gets emailed, written into the outbox inside the caller's transaction:

- the customer's iTIP email for each booking, move and cancellation (RFC 5546 carried by
  RFC 6047 iMIP), called from feeds.change_effects.after_change;
- an alert email to the company's admins and the staff member when feeds.health opens an alert
  (once per alert episode, not once per failed sync).

Nothing here sends: feeds.mailer delivers the outbox after the commit.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from calsync.feeds.mail.drafts import Booked, Customer, appointment_draft
from calsync.feeds.mail.itip import METHODS, Organizer
from calsync.feeds.mail.mime import Party, build_message, check_address, new_message_id, one_line, render
from calsync.feeds.mail.outbox import add_email, mail_identity
from calsync.models import (
    AdminUser,
    Alert,
    AlertKind,
    Appointment,
    AppointmentChange,
    ChangeAction,
    ChangeSource,
    Company,
    Conflict,
    Connection,
    OutboxEmail,
    OutboxKind,
    Staff,
    utcnow,
)

log = logging.getLogger("calsync.notifications")
# Demo data books made-up customers at example.com addresses: nobody to tell.
SILENT_SOURCES = frozenset({ChangeSource.DEMO})
HEADLINES: dict[str, str] = {ChangeAction.BOOKED: "Confirmed", ChangeAction.RESCHEDULED: "Moved",
                              ChangeAction.CANCELLED: "Cancelled"}


def _flat(name: str, limit: int = 200) -> str:
    """A name (customer, staff, service, calendar, company) on one line for every part of an
    email: a CR/LF in a customer's name would otherwise start a line of the plain-text body
    that reads like a header ("Reply-To: ...") or a line of our own text."""
    return one_line(name, limit)


def zone_of(staff: Staff, company: Company) -> ZoneInfo:
    """The staff member's zone (where the appointment takes place), else the company's."""
    for name in (staff.timezone, company.timezone):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def describe_time(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    """"Monday 7 January 2030, 10:00–10:30 CET (Europe/Berlin)": local time with the zone
    named, so a customer in another zone can tell which 10:00 is meant."""
    s, e = start.astimezone(zone), end.astimezone(zone)
    first = f"{s:%A} {s.day} {s:%B %Y}, {s:%H:%M}"
    last = f"{e:%H:%M}" if e.date() == s.date() else f"{e:%A} {e.day} {e:%B %Y}, {e:%H:%M}"
    return f"{first}–{last} {s.tzname()} ({zone.key})"


def short_time(start: datetime, zone: ZoneInfo) -> str:
    s = start.astimezone(zone)
    return f"{s:%a} {s.day} {s:%b %Y}, {s:%H:%M} {s.tzname()}"


def _previous_time(session: Session, appointment: Appointment) -> tuple[datetime, datetime] | None:
    """Where a moved appointment was: from the history entry after_change has just written."""
    change = session.scalar(
        select(AppointmentChange)
        .where(AppointmentChange.appointment_id == appointment.id,
               AppointmentChange.action == ChangeAction.RESCHEDULED,
               AppointmentChange.sequence == appointment.sequence)
        .order_by(AppointmentChange.id.desc()).limit(1)
    )
    try:
        detail = change.detail if change is not None else {}
        return (datetime.fromisoformat(detail["previous_start"]),
                datetime.fromisoformat(detail["previous_end"]))
    except (KeyError, TypeError, ValueError):
        return None


def queue_customer_email(
    session: Session, appointment: Appointment, action: str, source: str, *,
    previous: tuple[datetime, datetime] | None = None,
) -> OutboxEmail | None:
    """Write the customer's email about this change into the outbox; None when there is none
    to write (no address, demo data, an action customers are not told about, or already
    written: the dedupe key is (UID, SEQUENCE, kind)). `previous`: where a moved appointment
    was, when the caller knows (after_change does); otherwise it is read from the history."""
    method = METHODS.get(action)
    customer = appointment.customer
    if method is None or source in SILENT_SOURCES or not customer.email:
        return None
    try:
        to_address = check_address(customer.email)
    except ValueError:
        # Not worth failing the booking over; the address is not logged (personal data).
        log.warning("appointment %s: the customer's email address is unusable; no email written",
                    appointment.id)
        return None
    company = session.get(Company, appointment.company_id)
    assert company is not None
    staff = appointment.staff
    identity = mail_identity(session)
    zone = zone_of(staff, company)
    if action != ChangeAction.RESCHEDULED:
        previous = None
    elif previous is None:
        previous = _previous_time(session, appointment)
    subject = f"{HEADLINES[action]}: {appointment.service} on {short_time(appointment.start_at, zone)}"
    subject = _flat(subject, 300)
    context = {
        "kind": str(action), "subject": subject, "company": _flat(company.name),
        "customer": _flat(customer.name), "service": _flat(appointment.service),
        "staff": _flat(staff.name),
        "location": _flat(appointment.location) if appointment.location else appointment.location,
        "when": describe_time(appointment.start_at, appointment.end_at, zone),
        "previous": describe_time(previous[0], previous[1], zone) if previous else None,
    }
    # Written as a draft, built when it is sent (feeds/mail/drafts.py): the message bytes cost
    # a third of the change's request.
    draft = appointment_draft(
        sender=Party(company.name, identity.from_address), recipient=Party(customer.name, to_address),
        subject=subject, date=appointment.updated_at, message_id=new_message_id(identity.from_address),
        template="appointment", context=context, method=method,
        organizer=Organizer(company.name, identity.from_address),
        summary=f"{appointment.service} – {company.name}",
        description=f"{appointment.service} with {staff.name} ({company.name}).",
        booked=Booked(uid=appointment.uid, sequence=appointment.sequence, created_at=appointment.created_at,
                      updated_at=appointment.updated_at, start_at=appointment.start_at,
                      end_at=appointment.end_at, location=appointment.location,
                      customer=Customer(customer.name, customer.email)),
    )
    return add_email(session, OutboxEmail(
        company_id=company.id, appointment_id=appointment.id, kind=action, method=method,
        uid=appointment.uid, sequence=appointment.sequence,
        dedupe_key=f"{appointment.uid}:{appointment.sequence}:{action}",
        to_address=to_address, subject=subject[:300], message=None, draft=draft, created_at=utcnow(),
    ))


def _alert_recipients(session: Session, company: Company, staff: Staff) -> dict[str, Party]:
    """Admins of the company and the staff member, one entry per address."""
    found: dict[str, Party] = {}
    admins = session.scalars(
        select(AdminUser.email).where(AdminUser.company_id == company.id).order_by(AdminUser.id)
    )
    for name, address in [("", a) for a in admins] + [(staff.name, staff.email)]:
        try:
            clean = check_address(address)
        except ValueError:
            continue
        found.setdefault(clean.lower(), Party(name, clean))
    return found


def queue_alert_emails(session: Session, alert: Alert) -> list[OutboxEmail]:
    """Email a newly opened alert; dedupe key alert:{id}:{address}, so each person hears about
    an episode once however often it is looked at."""
    session.flush()  # the alert's id is part of the dedupe key
    company = session.get(Company, alert.company_id)
    conn = session.get(Connection, alert.connection_id)
    assert company is not None and conn is not None
    staff = session.get(Staff, conn.staff_id)
    assert staff is not None
    identity = mail_identity(session)
    zone = zone_of(staff, company)
    created = alert.created_at or utcnow()
    subject = (f"Calendar sync is failing: {conn.name} ({staff.name})" if alert.kind == AlertKind.FAILING
               else f"Calendar has not synced for a while: {conn.name} ({staff.name})")
    subject = _flat(subject, 300)
    written = []
    for key, party in _alert_recipients(session, company, staff).items():
        context = {
            "subject": subject, "message": alert.message, "company": _flat(company.name),
            "staff": _flat(staff.name), "calendar": _flat(conn.name),
            "since": f"{created.astimezone(zone):%Y-%m-%d %H:%M} {created.astimezone(zone).tzname()}",
            "for_staff": key == staff.email.strip().lower(),
            "admin_url": f"{identity.base_url}/" if identity.base_url else None,
        }
        email = add_email(session, OutboxEmail(
            company_id=company.id, kind=OutboxKind.ALERT, dedupe_key=f"alert:{alert.id}:{key}",
            to_address=party.address, subject=subject[:300], created_at=utcnow(),
            message=build_message(
                sender=Party(company.name, identity.from_address), recipient=party,
                subject=subject, text=render("alert.txt", **context),
                html=render("alert.html", **context), date=created,
            ),
        ))
        if email is not None:
            written.append(email)
    return written


def queue_conflict_emails(session: Session, conflict: Conflict) -> list[OutboxEmail]:
    """Tell the staff member (and the admins) that a calendar-side change was not applied;
    once per conflict (dedupe key conflict:{id}:{address})."""
    session.flush()
    appt = session.get(Appointment, conflict.appointment_id)
    assert appt is not None
    company = session.get(Company, appt.company_id)
    staff = session.get(Staff, appt.staff_id)
    assert company is not None and staff is not None
    identity = mail_identity(session)
    zone = zone_of(staff, company)
    subject = f"A calendar change was not applied: {appt.service} ({staff.name})"
    subject = _flat(subject, 300)
    calendar_time = (
        "deleted" if conflict.calendar_deleted or conflict.calendar_start is None
        or conflict.calendar_end is None
        else describe_time(conflict.calendar_start, conflict.calendar_end, zone)
    )
    written = []
    for key, party in _alert_recipients(session, company, staff).items():
        context = {
            "subject": subject, "reason": conflict.reason, "company": _flat(company.name),
            "staff": _flat(staff.name), "service": _flat(appt.service),
            "customer": _flat(appt.customer.name),
            "platform_time": describe_time(appt.start_at, appt.end_at, zone),
            "calendar_time": calendar_time,
            "for_staff": key == staff.email.strip().lower(),
            "admin_url": f"{identity.base_url}/" if identity.base_url else None,
        }
        email = add_email(session, OutboxEmail(
            company_id=company.id, appointment_id=None, kind=OutboxKind.CONFLICT,
            dedupe_key=f"conflict:{conflict.id}:{key}", to_address=party.address,
            subject=subject[:300], created_at=utcnow(),
            message=build_message(
                sender=Party(company.name, identity.from_address), recipient=party,
                subject=subject, text=render("conflict.txt", **context),
                html=render("conflict.html", **context), date=utcnow(),
            ),
        ))
        if email is not None:
            written.append(email)
    return written
