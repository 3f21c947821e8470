"""CalDAV calendars through the caldav library, with every request on the guarded session.

- Discovery: principal → calendar home → calendars (name, colour, URL, writable), as the
  caldav library does it (RFC 4791 §6 / RFC 5397). DNS-based RFC 6764 discovery is off: its
  SRV/TXT lookups would bypass the address checks of our resolver.
- Reading changes and writing items: the calendar store of feeds.calendars.caldav_store,
  which uses this module's client, CTag and item loading.
- Server XML is untrusted (docs/protocol.md): the guarded session (fetch.GuardedSession) refuses
  any answer declaring a DTD, and caldav parses with resolve_entities=False and
  no_network=True besides (no external entities, no entity expansion). Every answer is read
  under the caps (bytes, time, items), and a sync's whole conversation ends by a deadline set
  inside its lease.
- Authentication: the first client for a calendar sends a request without credentials and
  answers the server's 401 challenge (caldav's negotiation). Once a calendar's server has asked
  for Basic, later clients for it (same URL and user name) send Basic up front (RFC 7617 §2.2:
  the protection space of that URL), sparing a round trip per sync — and on servers that slow
  down 401 answers against password guessing (Radicale: about a second each), that second. If
  such a request is refused, the client negotiates again from the server's challenge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import niquests
from caldav.davclient import DAVClient
from caldav.elements import dav, ical
from caldav.elements.base import ValuedBaseElement
from caldav.lib import error as dav_error
from lxml import etree

from calsync.feeds.errors import CalsyncError
from calsync.feeds.sources.addresses import normalise_calendar_url
from calsync.feeds.sources.fetch import (
    FetchError,
    FetchLimits,
    GuardedResolver,
    GuardedSession,
    _explain,
    fetch_url,
)

WRITE_PRIVILEGES = {"write", "write-content", "all", "bind"}
# (URL given to dav_client, user name) of calendars whose server asked for Basic: this
# process's clients send Basic to them up front. Only ever a hint, so it is never persisted.
_BASIC_SPACES: set[tuple[str, str]] = set()


class GetCTag(ValuedBaseElement):
    """CalendarServer's collection tag: changes whenever anything in the calendar changes."""

    tag = "{http://calendarserver.org/ns/}getctag"


@dataclass(frozen=True)
class RemoteCalendar:
    url: str
    name: str
    color: str | None
    writable: bool


def _error(exc: BaseException, resolver: GuardedResolver) -> FetchError:
    if isinstance(exc, FetchError):
        return exc
    if resolver.refusal:
        return _explain(exc, resolver)
    if isinstance(exc, niquests.exceptions.TooManyRedirects):
        return FetchError("redirects", "The calendar address redirected too many times (a "
                                       "redirect loop); check the address.")
    if isinstance(exc, dav_error.RateLimitError):
        return FetchError("busy", "The calendar server asked to be contacted less often; the "
                                  "calendar will be synced again later.")
    if isinstance(exc, dav_error.DAVError):
        text = f"{type(exc).__name__} {exc}".lower()
        if isinstance(exc, dav_error.AuthorizationError) or "401" in text or "unauthorized" in text:
            return FetchError("auth", "The calendar server rejected the user name or password "
                                      "(for iCloud and Fastmail use an app-specific password).")
        if "403" in text or "forbidden" in text:
            return FetchError("permission", "The calendar server denied access to that calendar.")
        if isinstance(exc, dav_error.NotFoundError) or "404" in text or "not found" in text:
            return FetchError("not_found", "The calendar was not found at that address.")
        return FetchError("not_caldav", "That address did not answer like a CalDAV calendar server.")
    if isinstance(exc, niquests.exceptions.RequestException | OSError):
        return _explain(exc, resolver)
    # Anything else was raised while taking the server's answer apart: malformed XML,
    # undecodable text, a multistatus missing what every CalDAV server sends. Never the
    # exception's own text (it may quote the answer).
    return FetchError("unreadable", "The calendar server's answer could not be read (it is not "
                                    "valid CalDAV); check the address, or try again later.")


class _Client(DAVClient):
    """caldav's client; with `basic_up_front` it sends Basic credentials on the first request
    (caldav's auth_type="basic"), and a 401 to that makes it negotiate from the challenge, as a
    client without the hint would have done."""

    def __init__(self, *args: Any, basic_up_front: bool, **kwargs: Any) -> None:
        kwargs["auth_type"] = "basic" if basic_up_front else None
        super().__init__(*args, **kwargs)
        self.basic_up_front = basic_up_front

    def _should_negotiate_auth(self, status_code: int, headers: Any) -> bool:
        if self.basic_up_front and status_code == 401:
            self.basic_up_front = False  # once: a second refusal is a wrong password
            self.auth, self.auth_type = None, None
        return bool(super()._should_negotiate_auth(status_code, headers))

    @property
    def uses_basic(self) -> bool:
        return type(self.auth).__name__ == "HTTPBasicAuth"


@contextmanager
def dav_client(
    url: str, username: str | None, password: str | None, *, allow_private: bool,
    limits: FetchLimits | None = None,
) -> Iterator[tuple[DAVClient, GuardedResolver]]:
    limits = limits or FetchLimits()
    url = normalise_calendar_url(url)
    resolver = GuardedResolver(allow_private, ports=limits.ports)
    space = (url, username or "")
    client = _Client(
        url, username=username, password=password, timeout=int(limits.read_seconds),
        enable_rfc6764=False, require_tls=False,
        basic_up_front=bool(username) and password is not None and space in _BASIC_SPACES,
    )
    # Swap caldav's own HTTP session for the guarded one: every request and redirect hop
    # is resolved (and checked) by our resolver, and every answer is read under the caps.
    client.session.close()
    session = GuardedSession(resolver, limits)
    session.refuse_web_pages = True
    client.session = session
    try:
        yield client, resolver
    except FetchError:
        _BASIC_SPACES.discard(space)
        raise
    except CalsyncError:
        raise  # a named answer to a request that worked (a calendar store's 412, 404): as it is
    except Exception as exc:
        _BASIC_SPACES.discard(space)
        # A cap hit first is the cause, whatever caldav made of it afterwards.
        raise (session.failure or _error(exc, resolver)) from exc
    else:
        if session.failure is not None:  # caldav caught it and carried on with less
            _BASIC_SPACES.discard(space)
            raise session.failure
        if client.uses_basic:
            _BASIC_SPACES.add(space)
        else:
            _BASIC_SPACES.discard(space)
    finally:
        client.session.close()


def _privileges(client: DAVClient, url: str) -> set[str]:
    body = dav.Propfind() + [dav.Prop() + [dav.CurrentUserPrivilegeSet()]]
    response = client.propfind(url, props=etree.tostring(body.xmlelement()), depth=0)
    tree = response.tree
    if tree is None:
        return set()
    return {
        etree.QName(child).localname
        for priv in tree.iter("{DAV:}privilege")
        for child in priv
        if isinstance(child.tag, str)
    }


def is_writable(client: DAVClient, url: str) -> bool:
    return bool(_privileges(client, url) & WRITE_PRIVILEGES)


def discover_calendars(
    url: str, username: str, password: str, *, allow_private: bool, limits: FetchLimits | None = None,
) -> list[RemoteCalendar]:
    """The calendars the user can see on a server, from its URL (any URL on it)."""
    try:
        return _discover(url, username, password, allow_private=allow_private, limits=limits)
    except FetchError as exc:
        # A web server without WebDAV answers 405 or 501 whether or not anything is there:
        # a plain GET tells a mistyped address (404) from a web page.
        if exc.kind == "web_page" and _nothing_at(url, allow_private=allow_private, limits=limits):
            raise FetchError("not_found", "Nothing was found at that address (404): check the CalDAV "
                                          "address your calendar provider gives (for iCloud "
                                          "https://caldav.icloud.com/, for Fastmail "
                                          "https://caldav.fastmail.com/).") from exc
        raise


def _nothing_at(url: str, *, allow_private: bool, limits: FetchLimits | None) -> bool:
    try:
        fetch_url(normalise_calendar_url(url), limits=limits, allow_private=allow_private, accept="*/*")
    except FetchError as exc:
        return exc.kind == "not_found"
    except CalsyncError:
        return False
    return False


def _discover(
    url: str, username: str, password: str, *, allow_private: bool, limits: FetchLimits | None = None,
) -> list[RemoteCalendar]:
    with dav_client(url, username, password, allow_private=allow_private, limits=limits) as (client, _r):
        calendars = client.principal().calendars()
        found = []
        for cal in calendars:
            props = cal.get_properties([dav.DisplayName(), ical.CalendarColor()])
            cal_url = str(cal.url)
            fallback = urlsplit(cal_url).path.rstrip("/").rsplit("/", 1)[-1]
            found.append(
                RemoteCalendar(
                    url=cal_url,
                    name=str(props.get("{DAV:}displayname") or fallback),
                    color=props.get("{http://apple.com/ns/ical/}calendar-color") or None,
                    writable=is_writable(client, cal_url),
                )
            )
        return found


def calendar_writable(url: str, username: str, password: str, *, allow_private: bool,
                      limits: FetchLimits | None = None) -> bool:
    with dav_client(url, username, password, allow_private=allow_private, limits=limits) as (client, _r):
        calendar = client.calendar(url=normalise_calendar_url(url))
        calendar.get_properties([dav.DisplayName()])  # 404 / 401 / not-a-calendar surface here
        return is_writable(client, str(calendar.url))


def _load_batch(client: DAVClient, calendar: Any, objs: list[Any]) -> dict[str, bytes]:
    """The bodies of `objs`: one calendar-multiget REPORT (RFC 4791 §7.9) per batch instead of a
    GET per item, which on a first sync of thousands of events is what fits in the lease. Items
    the multiget did not return, or a batch it could not read (one item in a legacy encoding
    spoils the whole answer), are loaded one by one."""
    found: dict[str, bytes] = {}
    if len(objs) > 1:
        try:
            for got in calendar.multiget([obj.url for obj in objs]):
                body = got.data
                if body:
                    found[str(got.url)] = body.encode("utf-8") if isinstance(body, str) else body
        except (FetchError, niquests.exceptions.RequestException, OSError):
            raise  # the connection or the server's caps: not something a retry by item fixes
        except Exception:  # noqa: BLE001 - unreadable batch: fall back to one item at a time
            found = {}
    for obj in objs:
        href = str(obj.url)
        if href not in found:
            body = _load(client, obj)
            if body:
                found[href] = body
    return {str(obj.url): found[str(obj.url)] for obj in objs if str(obj.url) in found}


def _load(client: DAVClient, obj: Any) -> bytes | None:
    """One item's iCalendar body.

    caldav decodes items as UTF-8 and gives up on anything else (then tries a multiget, which
    fails the same way). Calendars written by older software are often Latin-1, and their busy
    times count all the same: such an item is fetched once more as bytes, undecoded, for
    busy-time extraction, which reads times, not titles.
    """
    try:
        obj.load()
    except dav_error.NotFoundError:
        return None  # deleted since it was listed: the next listing reports it gone
    except (FetchError, niquests.exceptions.RequestException, OSError, dav_error.DAVError):
        raise  # the connection or the server, not this item's content
    except Exception:
        response = client.session.request("GET", str(obj.url), auth=client.auth,
                                          headers={"Accept": "text/calendar"})
        return response.content if response.status_code == 200 else None
    body = obj.data
    return body.encode("utf-8") if isinstance(body, str) else body
