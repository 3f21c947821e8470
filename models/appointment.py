"""Customers and their appointments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from calsync.models.base import Base, UTCDateTime, utcnow
from calsync.models.enums import AppointmentStatus, state_column
from calsync.models.staff import Staff

# The names the code used before the enum; the members equal these strings.
STATUS_CONFIRMED = AppointmentStatus.CONFIRMED
STATUS_CANCELLED = AppointmentStatus.CANCELLED


class Customer(Base):
    __tablename__ = "customer"
    # Booking reuses a customer whose details all match (feeds.booking): looked up by name
    # within the company, not by scanning all the company's customers.
    __table_args__ = (Index("ix_customer_company_name", "company_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Appointment(Base):
    __tablename__ = "appointment"
    # Feeds and availability ask "this staff member's appointments overlapping [a, b)":
    # (staff_id, start_at) keeps that a range scan whatever the size of the table. Feeds bound
    # start_at from both sides; availability and booking ask only end_at > a, which
    # (staff_id, end_at) answers from the staff member's upcoming appointments, however long
    # their history.
    __table_args__ = (
        Index("ix_appointment_staff_start", "staff_id", "start_at"),
        Index("ix_appointment_staff_end", "staff_id", "end_at"),
        # A feed rebuilt beside the segment of revision r asks "changed since r?" (staff_revision).
        Index("ix_appointment_staff_revision", "staff_id", "staff_revision"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("company.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="RESTRICT"))
    uid: Mapped[str] = mapped_column(String(255), unique=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped on every change, whatever it is: the key of the cached VEVENT fragments.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    # The staff member's feed_revision written by the change that last touched this appointment
    # (booking.py, directory.py), in the same transaction; 0 when not known (rows written in
    # bulk, rows from before migration 0019). A feed segment made at revision r is brought up
    # to date by reading the appointments with staff_revision > r (feeds/publishing/segments.py).
    staff_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[AppointmentStatus] = mapped_column(
        state_column(AppointmentStatus, 16, "status"), default=AppointmentStatus.CONFIRMED
    )
    service: Mapped[str] = mapped_column(String(200))
    location: Mapped[str | None] = mapped_column(String(500))
    notes: Mapped[str | None] = mapped_column(Text)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    staff: Mapped[Staff] = relationship(lazy="joined")
    customer: Mapped[Customer] = relationship(lazy="joined")
