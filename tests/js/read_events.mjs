// Read iCalendar files as Thunderbird does with Mozilla's ical.js (VTIMEZONEs registered with
// ICAL.TimezoneService first, as read_feed.mjs does) and print, as JSON, for each file given on
// the command line: {file: {calendar: {name, color}, events: {uid: {start, end, summary,
// description, location, status, transp, sequence, organizer, attendees}}}}, the start and end
// in UTC (tests/icaljs.py).
import { readFileSync } from "node:fs";
import ICAL from "ical.js";

const text = (component, name) => {
  const value = component.getFirstPropertyValue(name);
  return value === null || value === undefined ? null : String(value);
};

const result = {};
for (const path of process.argv.slice(2)) {
  ICAL.TimezoneService.reset();
  const calendar = new ICAL.Component(ICAL.parse(readFileSync(path, "utf8")));
  for (const vtimezone of calendar.getAllSubcomponents("vtimezone")) {
    ICAL.TimezoneService.register(new ICAL.Timezone(vtimezone));
  }
  const events = {};
  for (const vevent of calendar.getAllSubcomponents("vevent")) {
    const event = new ICAL.Event(vevent);
    for (const time of [event.startDate, event.endDate]) {
      if (time.zone && time.zone.tzid !== "UTC" && time.zone.tzid !== "floating"
          && !ICAL.TimezoneService.has(time.zone.tzid)) {
        throw new Error(`${event.uid}: no VTIMEZONE for ${time.zone.tzid}`);
      }
    }
    const utc = (time) => new Date(time.toUnixTime() * 1000).toISOString();
    const organizer = vevent.getFirstProperty("organizer");
    events[event.uid] = {
      start: utc(event.startDate),
      end: utc(event.endDate),
      summary: event.summary ?? null,
      description: event.description ?? null,
      location: event.location ?? null,
      status: text(vevent, "status"),
      transp: text(vevent, "transp"),
      sequence: event.sequence,
      organizer: organizer ? { address: organizer.getFirstValue(), cn: organizer.getParameter("cn") ?? null } : null,
      attendees: event.attendees.map((a) => ({
        address: a.getFirstValue(), cn: a.getParameter("cn") ?? null,
        scheduleAgent: a.getParameter("schedule-agent") ?? null,
      })),
    };
  }
  result[path] = {
    calendar: { name: text(calendar, "x-wr-calname"), color: text(calendar, "color") },
    events,
  };
}
process.stdout.write(JSON.stringify(result));
