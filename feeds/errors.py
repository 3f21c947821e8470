"""Named errors of the calendar core. Messages are sentences a user can act on."""

from __future__ import annotations


class CalsyncError(Exception):
    """Base of every error calsync raises on purpose."""


class ConfigurationError(CalsyncError):
    """A setting is missing, unknown or invalid."""


class NotFoundError(CalsyncError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class ValidationError(CalsyncError):
    """Input is well-formed but not acceptable; `field` names what to fix."""

    def __init__(self, message: str, field: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind  # e.g. "address": the URL itself is malformed or not allowed


class SchedulingError(CalsyncError):
    """A booking, reschedule or cancellation was refused: the slot is taken, outside working
    hours, or the appointment cannot change any more."""
