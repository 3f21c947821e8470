"""Contract fakes of services that cannot be reached from here (Google Calendar), written from
their published references and checked against their machine-readable descriptions."""
