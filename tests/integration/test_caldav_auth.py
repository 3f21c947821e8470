"""CalDAV login: the first client for a calendar negotiates from the server's 401 challenge;
once the server has asked for Basic, later clients send it up front (Radicale answers each 401
after a deliberate delay, so this saves about a second per sync). A refused login still ends in
the same 'auth' error, and the hint is forgotten."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calsync.feeds.sources.addresses import normalise_calendar_url
from calsync.feeds.sources.caldav_source import _BASIC_SPACES, calendar_writable
from calsync.feeds.sources.fetch import FetchError
from tests.servers import CalDAVServer, _serve_wsgi, radicale_app


class StatusCounter:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            self.statuses[int(status.split()[0])] += 1
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[CalDAVServer, StatusCounter]]:
    users = tmp_path / "users"
    users.write_text("zoe:pw\n")
    counter = StatusCounter(radicale_app(users, tmp_path / "dav", {"type": "owner_only"}))
    server, url = _serve_wsgi(counter)
    dav = CalDAVServer("radicale", url, "zoe", "pw", "/zoe/")
    dav.calendar("work")
    _BASIC_SPACES.clear()
    counter.statuses.clear()
    yield dav, counter
    _BASIC_SPACES.clear()
    server.close()


def test_basic_is_sent_up_front_once_the_server_asked_for_it(counted) -> None:  # type: ignore[no-untyped-def]
    dav, counter = counted
    assert calendar_writable(dav.url_of("work"), "zoe", "pw", allow_private=True)
    assert counter.statuses[401] == 1  # the first client negotiates
    counter.statuses.clear()
    assert calendar_writable(dav.url_of("work"), "zoe", "pw", allow_private=True)
    assert counter.statuses[401] == 0 and counter.statuses[207] >= 1


def test_a_refused_login_is_still_an_auth_error_and_the_hint_is_forgotten(counted) -> None:  # type: ignore[no-untyped-def]
    dav, counter = counted
    calendar_writable(dav.url_of("work"), "zoe", "pw", allow_private=True)
    assert (normalise_calendar_url(dav.url_of("work")), "zoe") in _BASIC_SPACES
    with pytest.raises(FetchError) as err:
        calendar_writable(dav.url_of("work"), "zoe", "changed-password", allow_private=True)
    assert err.value.kind == "auth"
    assert (normalise_calendar_url(dav.url_of("work")), "zoe") not in _BASIC_SPACES
    counter.statuses.clear()
    assert calendar_writable(dav.url_of("work"), "zoe", "pw", allow_private=True)
