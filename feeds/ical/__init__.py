"""What calsync writes in iCalendar: the one VEVENT builder (feeds, calendar copies, iTIP) and
the VTIMEZONEs every client reads alike."""
