"""Scheduling rules: staff and groups, working hours, availability, booking, rescheduling and
cancelling, and what follows every change (history, emails, pushes)."""
