// Read iCalendar files the way Thunderbird does with Mozilla's ical.js: each calendar's
// VTIMEZONEs are registered with ICAL.TimezoneService before its events are read, so a TZID
// resolves through the VTIMEZONE the file carries. Prints, as JSON, for each file given on the
// command line: {file: {uid: UTC start in ISO 8601}} (tests/integration/test_client_parsers.py).
import { readFileSync } from "node:fs";
import ICAL from "ical.js";

const result = {};
for (const path of process.argv.slice(2)) {
  ICAL.TimezoneService.reset();
  const calendar = new ICAL.Component(ICAL.parse(readFileSync(path, "utf8")));
  for (const vtimezone of calendar.getAllSubcomponents("vtimezone")) {
    ICAL.TimezoneService.register(new ICAL.Timezone(vtimezone));
  }
  const starts = {};
  for (const vevent of calendar.getAllSubcomponents("vevent")) {
    const event = new ICAL.Event(vevent);
    const start = event.startDate;
    if (start.zone && start.zone.tzid !== "UTC" && start.zone.tzid !== "floating"
        && !ICAL.TimezoneService.has(start.zone.tzid)) {
      throw new Error(`${event.uid}: no VTIMEZONE for ${start.zone.tzid}`);
    }
    starts[event.uid] = new Date(start.toUnixTime() * 1000).toISOString();
  }
  result[path] = starts;
}
process.stdout.write(JSON.stringify(result));
