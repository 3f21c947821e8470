"""Calendar store: the interface every writable calendar source implements; sync, push and
two-way sync depend on it only (the way vdirsyncer separates its storage backends from its sync
algorithm).

Glossary:

- store: one calendar collection (a CalDAV calendar; later a Google or Microsoft calendar),
  holding items.
- item: one calendar object resource: an iCalendar body (RFC 5545) with one UID, stored at
  an href.
- href: an item's address in its store, as the store names it (for CalDAV the URL of the
  resource). Hrefs are opaque to the caller: it keeps them, compares them, hands them back.
- ETag: the version of one item (RFC 9110 §8.8.3). It changes whenever the item changes; the
  caller compares ETags, never their content. Writes are conditional on it: an update or
  delete names the ETag the caller last saw (If-Match), a create insists nothing is there yet
  (If-None-Match: *). A precondition that fails means someone else changed the item: read it
  again and decide again, never overwrite blindly.
- sync token: the version of the whole store (RFC 6578 sync-collection). `changes_since`
  a token answers "what changed since then", with a new token. Stores may forget old tokens
  or not have any: then `InvalidSyncToken`, and the caller lists everything.
- collection tag: a cheap version of the whole store (CalendarServer's CTag), only a hint that
  nothing changed; None where the store has none.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from calsync.feeds.errors import CalsyncError
from calsync.feeds.sources.fetch import FetchError, FetchLimits


class StoreError(CalsyncError):
    """A named outcome of a store operation; `kind` is a short code for logs and health."""

    kind = "store"


class PreconditionFailed(StoreError):
    """The item is not at the ETag the write named (HTTP 412): it changed, appeared or vanished
    since the caller last saw it. `href` is where the write went (for a create: the item that is
    already there)."""

    kind = "precondition"

    def __init__(self, href: str) -> None:
        super().__init__("The event was changed in the calendar at the same time; it is read again.")
        self.href = href


class ItemNotFound(StoreError):
    """There is no item at that href (HTTP 404 or 410)."""

    kind = "not_found"

    def __init__(self, href: str) -> None:
        super().__init__("The event is no longer in the calendar.")
        self.href = href


class InvalidSyncToken(StoreError):
    """The store no longer knows the token (or has no sync tokens at all): list everything."""

    kind = "sync_token"

    def __init__(self) -> None:
        super().__init__("The calendar's change history was reset; it is read in full.")


class WriteRefused(StoreError):
    """The store refused a write for another reason than a precondition: no permission
    (`status` 401/403), a body it would not take, a server error."""

    kind = "write"

    def __init__(self, status: int) -> None:
        if status in (401, 403):
            message = ("The calendar server refused the write: check that the calendar still grants "
                       "write access (Editor/Delegate).")
        else:
            message = f"The calendar server could not store the booking (HTTP {status}); it will be retried."
        super().__init__(message)
        self.status = status


class StoreUnavailable(StoreError, FetchError):
    """The store could not be reached or its answer not read; `kind` says why (the transport's
    own code: "timeout", "auth", "unreadable", ...) and the message what to do. A FetchError
    too: whatever handles a failed fetch (health, the API's answers) handles it the same way."""

    def __init__(self, kind: str, message: str) -> None:
        FetchError.__init__(self, kind, message)


@dataclass(frozen=True)
class Item:
    href: str
    etag: str | None  # None only where a server answers without one
    body: bytes


@dataclass(frozen=True)
class Written:
    """Where a write left the item: its href and new ETag."""

    href: str
    etag: str | None


@dataclass(frozen=True)
class Listing:
    """Every item of the store, and the sync token of that state (None: the store has none).
    `window`: the span the listing covers where the store lists only a time window (Graph's
    calendarView), None where it lists the whole calendar. An item missing from a windowed
    listing may only lie outside the window: its absence says nothing about a deletion."""

    etags: dict[str, str]  # href → ETag
    token: str | None
    window: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class Changes:
    """What changed since a sync token: items added or changed (with their ETags), items
    gone, and the token of the state after them. `left`: those of `deleted` that only left
    the store's window (Graph's `@removed` with reason `changed`: moved out of it), which may
    well still exist; the rest were reported deleted."""

    changed: dict[str, str]
    deleted: set[str]
    token: str
    left: frozenset[str] = frozenset()
    window: tuple[datetime, datetime] | None = None  # as Listing.window


class CalendarStore(Protocol):
    def collection_tag(self) -> str | None:
        """A cheap version of the whole store, or None: equal tags mean nothing changed."""

    def list(self) -> Listing:
        """Every item's href and ETag (not the bodies)."""

    def changes_since(self, token: str) -> Changes:
        """Changes since `token`; raises InvalidSyncToken when the store cannot answer that."""

    def get(self, href: str) -> Item:
        """One item; raises ItemNotFound."""

    def get_many(self, hrefs: Iterable[str]) -> dict[str, Item]:
        """The items at `hrefs`, by href; items gone meanwhile, or unreadable, are left out.
        An item's ETag may be None here (a CalDAV multiget through caldav keeps none): the
        listing that named the hrefs has them."""

    def create(self, name: str, body: bytes) -> Written:
        """A new item named `name` (If-None-Match: *); PreconditionFailed if one is there."""

    def update(self, href: str, body: bytes, etag: str | None) -> Written:
        """Replace the item if it is still at `etag` (If-Match); PreconditionFailed if not.
        `etag` None writes unconditionally: only for a server that gave the item no ETag."""

    def delete(self, href: str, etag: str | None) -> None:
        """Remove the item if it is still at `etag`; PreconditionFailed if not, ItemNotFound
        if it is gone already."""


@dataclass(frozen=True)
class StoreAddress:
    """What opens a store: its URL and credentials (already taken out of the vault)."""

    url: str
    username: str | None
    password: str | None


class StoreOpener(Protocol):
    """Opens a store for one conversation (one sync's reading, or its writing); the limits'
    deadline bounds the whole conversation."""

    def __call__(
        self, address: StoreAddress, *, allow_private: bool, limits: FetchLimits, max_items: int = ...,
    ) -> AbstractContextManager[CalendarStore]: ...
