"""`calsync connector-check google|microsoft` (issues 11/12): with real credentials, list the
account's calendars and do ONE read-only incremental sync of one calendar — a full listing
that ends with a sync token (Google's nextSyncToken, Graph's deltaLink), then one pass with
that token — and report what was seen. It is how an operator confirms against the real
service what the test suite verified against the contract fakes only.

Read-only: nothing is written to the calendar, and the connection's stored sync token and
health are left alone (the listing's token is used once and dropped). Tokens refreshed on the
way are stored as a sync would store them (provider_access), since Microsoft may rotate the
refresh token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import Vault
from calsync.feeds.calendars.company_accounts import (
    CompanyAccess,
    google_key,
    microsoft_credentials,
)
from calsync.feeds.calendars.provider_access import ProviderSetup, open_provider_store
from calsync.feeds.calendars.providers.base import RemoteCalendar
from calsync.feeds.calendars.providers.company_google import open_delegated_google_store
from calsync.feeds.calendars.providers.company_microsoft import open_app_graph_store
from calsync.feeds.calendars.store import CalendarStore, StoreUnavailable
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.models import CompanyAccount, Connection, ProviderKind


@dataclass
class CheckReport:
    provider: str
    account: str  # whose calendars: the connected account or the address acted as
    calendar_id: str
    calendars: list[RemoteCalendar] = field(default_factory=list)
    listed_items: int = 0
    listing_requests: int = 0
    listing_bytes: int | None = None  # Graph's client counts bytes; Google's counts requests only
    token_received: bool = False
    changed: int = 0
    deleted: int = 0
    incremental_requests: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"{self.provider}: calendars of {self.account}"]
        for cal in self.calendars:
            flags = ", primary" if cal.primary else ""
            out.append(f"  - {cal.name} [{cal.access_role}{flags}] id={cal.id}")
        if not self.calendars:
            out.append("  (no calendars listed)")
        size = f", {self.listing_bytes} bytes" if self.listing_bytes is not None else ""
        out += [f"Calendar checked: {self.calendar_id}",
                f"  full listing: {self.listed_items} items in {self.listing_requests} request(s){size}; "
                f"sync token received: {'yes' if self.token_received else 'NO'}",
                f"  incremental pass with that token: {self.changed} changed, {self.deleted} deleted, "
                f"{self.incremental_requests} request(s)",
                f"Read-only: nothing was written. Took {self.seconds:.1f} s."]
        return out


def _counters(store: CalendarStore) -> tuple[int, int | None]:
    api: Any = getattr(store, "api", None)
    if api is None:
        return 0, None
    return int(api.requests), (int(api.bytes) if hasattr(api, "bytes") else None)


def _calendars(store: CalendarStore, kind: str, user: str | None) -> list[RemoteCalendar]:
    """The account's calendars through the store's own conversation (its tokens, its limits)."""
    api: Any = getattr(store, "api")  # noqa: B009 - both provider stores have one
    found: list[RemoteCalendar] = []
    if kind == ProviderKind.GOOGLE:
        for page in api.pages("/users/me/calendarList", {"maxResults": 250}):
            for entry in page.get("items") or []:
                name = entry.get("summaryOverride") or entry.get("summary") or entry["id"]
                role = str(entry.get("accessRole", "reader"))
                found.append(RemoteCalendar(str(entry["id"]), str(name), entry.get("backgroundColor"), role,
                                            bool(entry.get("primary"))))
        return found
    owner = "/me" if user is None else f"/users/{quote(user, safe='@')}"
    fields = "id,name,hexColor,canEdit,isDefaultCalendar"
    for page in api.pages(api.url(f"{owner}/calendars", {"$select": fields})):
        for entry in page.get("value") or []:
            role = "writer" if entry.get("canEdit") else "reader"
            name = str(entry.get("name") or entry["id"])
            found.append(RemoteCalendar(str(entry["id"]), name, entry.get("hexColor") or None, role,
                                        bool(entry.get("isDefaultCalendar"))))
    return found


def _run(store: CalendarStore, report: CheckReport, kind: str, user: str | None) -> CheckReport:
    started = time.monotonic()
    listing = store.list()
    report.listed_items = len(listing.etags)
    report.listing_requests, report.listing_bytes = _counters(store)
    report.token_received = bool(listing.token)
    report.calendars = _calendars(store, kind, user)
    before, _bytes = _counters(store)
    if listing.token:
        changes = store.changes_since(listing.token)
        report.changed, report.deleted = len(changes.changed), len(changes.deleted)
    report.incremental_requests = _counters(store)[0] - before
    report.seconds = time.monotonic() - started
    return report


def check_connection(sessions: sessionmaker[Session], vault: Vault, setup: ProviderSetup, kind: str,
                     connection_id: int) -> CheckReport:
    """A staff member's connection (their own consent, or made through the company account)."""
    with sessions() as session:
        conn = session.get(Connection, connection_id)
        if conn is None or conn.kind != kind:
            raise NotFoundError(f"There is no {kind} calendar connection with id {connection_id}; "
                                "`calsync sync --help` and the Sync health page list the connections.")
        via_company = conn.company_account_id is not None
        report = CheckReport(kind, conn.account_email or f"connection {conn.id}",
                             conn.remote_calendar_id or "primary")
    with open_provider_store(sessions, vault, setup, connection_id) as store:
        user = report.account if via_company and kind == ProviderKind.MICROSOFT else None
        return _run(store, report, kind, user)


def check_company_account(session: Session, vault: Vault, access: CompanyAccess, kind: str,
                          address: str, company_id: int | None = None) -> CheckReport:
    """The company-wide account, acting as `address` (a staff member's email)."""
    query = select(CompanyAccount).where(CompanyAccount.provider == kind)
    if company_id is not None:
        query = query.where(CompanyAccount.company_id == company_id)
    accounts = list(session.scalars(query))
    if not accounts:
        raise NotFoundError(f"No company-wide {kind} account is connected (admin: Calendar sync → "
                            "Company-wide calendar access).")
    if len(accounts) > 1:
        raise ValidationError("Several companies have one; name the company with --company-id.",
                              "company_id")
    account = accounts[0]
    report = CheckReport(kind, address, "primary")
    if kind == ProviderKind.GOOGLE:
        with open_delegated_google_store(access.google, google_key(vault, account), address,
                                         allow_private=access.allow_private, limits=access.limits) as store:
            return _run(store, report, kind, None)
    with open_app_graph_store(access.microsoft, microsoft_credentials(vault, account), address,
                              allow_private=access.allow_private, limits=access.limits) as graph:
        return _run(graph, report, kind, address)


__all__ = ["CheckReport", "StoreUnavailable", "check_company_account", "check_connection"]
