from __future__ import annotations

from datetime import UTC, datetime

from tests.servers import CalDAVServer


def test_both_caldav_servers_store_and_list_events(caldav_server: CalDAVServer) -> None:
    cal = caldav_server.calendar()
    cal.save_event(dtstart=datetime(2030, 1, 7, 9, tzinfo=UTC), dtend=datetime(2030, 1, 7, 10, tzinfo=UTC),
                   summary="Dentist", uid="smoke-1")
    listing = cal.objects_by_sync_token(load_objects=False)
    assert [str(o.url).rsplit("/", 1)[-1] for o in listing] == ["smoke-1.ics"]
