"""Company-wide provider accounts (issues 11/12, "corporate" mode): connect one, check which
staff members' calendars it reaches, create their connections through it, and open a store for
such a connection. The providers' sides are providers/company_google.py and
providers/company_microsoft.py; the rows are models.company_account.

A connection made here is a Connection of kind google/microsoft with `company_account_id`
set, `account_email` the address acted as and `remote_calendar_id` "primary": sync, pushes and
two-way sync treat it like one the staff member connected with OAuth; only where its access
token comes from differs (open_company_store, used by provider_access's token source, and
open_company_channels, used by feeds.calendars.channels for realtime mode).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import Vault
from calsync.feeds.calendars.providers.base import AccountRefused, MemberRefused, Tokens
from calsync.feeds.calendars.providers.company_google import (
    NO_CLIENT,
    ServiceAccountKey,
    check_subject,
    delegated_google_api,
    open_delegated_google_store,
    read_service_account_key,
)
from calsync.feeds.calendars.providers.company_microsoft import (
    AppCredentials,
    app_graph_api,
    check_mailbox,
    open_app_graph_store,
    read_app_credentials,
)
from calsync.feeds.calendars.providers.google import GoogleProvider
from calsync.feeds.calendars.providers.google_api import GoogleEndpoints
from calsync.feeds.calendars.providers.microsoft_api import MicrosoftEndpoints
from calsync.feeds.calendars.providers.subscriptions import ChangeChannels, GoogleChannels, GraphChannels
from calsync.feeds.calendars.store import CalendarStore, StoreUnavailable
from calsync.feeds.errors import NotFoundError, ValidationError
from calsync.feeds.scheduling.busy_timeline import forget as forget_busy_time
from calsync.feeds.scheduling.directory import get_staff, list_staff
from calsync.feeds.sources.fetch import FetchLimits
from calsync.models import (
    Company,
    CompanyAccount,
    CompanyAccountMember,
    CompanyAccountStatus,
    Connection,
    ConnectionKind,
    ConnectionStatus,
    ProviderKind,
    Role,
    Staff,
    SyncMode,
    utcnow,
)

PROVIDER_NAMES = {ProviderKind.GOOGLE: "Google Workspace", ProviderKind.MICROSOFT: "Microsoft 365"}


@dataclass(frozen=True)
class CompanyAccess:
    """Where the providers are and how requests are guarded (from the app's Settings)."""

    google: GoogleEndpoints = field(default_factory=GoogleEndpoints)
    microsoft: MicrosoftEndpoints = field(default_factory=MicrosoftEndpoints)
    allow_private: bool = False
    limits: FetchLimits = field(default_factory=FetchLimits)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    @classmethod
    def of(cls, settings: Any, limits: FetchLimits | None = None) -> CompanyAccess:
        """From the app's Settings (feeds.calendars may not import feeds.settings)."""
        return cls(GoogleEndpoints.of(settings), MicrosoftEndpoints.of(settings),
                   bool(settings.allow_private_networks), limits or FetchLimits())

    @classmethod
    def of_setup(cls, setup: Any) -> CompanyAccess:
        """From provider_access.ProviderSetup (which imports this module, so not by name)."""
        return cls(setup.google_endpoints, setup.microsoft_endpoints, setup.allow_private, setup.limits,
                   setup.sleep)


def _provider(value: str) -> ProviderKind:
    try:
        return ProviderKind(value)
    except ValueError:
        raise ValidationError("provider must be 'google' or 'microsoft'.", "provider") from None


def get_account(session: Session, company: Company, provider: str) -> CompanyAccount | None:
    return session.scalar(select(CompanyAccount).where(CompanyAccount.company_id == company.id,
                                                       CompanyAccount.provider == _provider(provider)))


def _save(session: Session, company: Company, provider: ProviderKind, sealed: str,
          display: str) -> CompanyAccount:
    account = get_account(session, company, provider)
    if account is None:
        account = CompanyAccount(company_id=company.id, provider=provider, created_at=utcnow())
        session.add(account)
    else:  # new credentials: what was checked with the old ones says nothing any more
        session.query(CompanyAccountMember).filter(CompanyAccountMember.account_id == account.id).delete()
    account.credentials_sealed, account.display = sealed, display
    account.status, account.last_error, account.checked_at = CompanyAccountStatus.UNCHECKED, None, None
    session.flush()
    return account


def connect_google_account(session: Session, company: Company, vault: Vault, key_file: str) -> CompanyAccount:
    """The uploaded service-account key (validated, then sealed); replaces an earlier one."""
    key = read_service_account_key(key_file)
    return _save(session, company, ProviderKind.GOOGLE, vault.seal(json.dumps(key.info)),
                 f"{key.client_email} (client id {key.client_id})")


def connect_microsoft_account(session: Session, company: Company, vault: Vault, *, tenant: str,
                              client_id: str, client_secret: str) -> CompanyAccount:
    credentials = read_app_credentials(tenant, client_id, client_secret)
    return _save(session, company, ProviderKind.MICROSOFT, vault.seal(json.dumps(credentials.as_dict())),
                 f"app {credentials.client_id} in {credentials.tenant}")


def disconnect_account(session: Session, company: Company, provider: str) -> int:
    """Remove the account and every connection made through it; returns how many connections.
    Events calsync wrote into those calendars stay (as when a CalDAV connection is removed)."""
    account = get_account(session, company, provider)
    if account is None:
        raise NotFoundError(f"No company-wide {PROVIDER_NAMES[_provider(provider)]} account is connected.")
    connections = list(session.scalars(select(Connection).where(Connection.company_account_id == account.id)))
    for conn in connections:
        forget_busy_time(session, conn.id)
        session.delete(conn)
    session.flush()  # before the account: the database would cascade to the rows deleted above
    session.delete(account)
    session.flush()
    return len(connections)


def google_key(vault: Vault, account: CompanyAccount) -> ServiceAccountKey:
    return read_service_account_key(vault.open(account.credentials_sealed))


def microsoft_credentials(vault: Vault, account: CompanyAccount) -> AppCredentials:
    data = json.loads(vault.open(account.credentials_sealed))
    return AppCredentials(data["tenant"], data["client_id"], data["client_secret"])


def _who(staff: Staff) -> str:
    return f"{staff.name} ({staff.email})"


def check_member(access: CompanyAccess, vault: Vault, account: CompanyAccount, staff: Staff) -> None:
    """Raises MemberRefused, AccountRefused or StoreUnavailable unless the staff member's
    calendar is reachable through the account."""
    if account.provider == ProviderKind.GOOGLE:
        with delegated_google_api(access.google, google_key(vault, account), staff.email, who=_who(staff),
                                  allow_private=access.allow_private, limits=access.limits) as api:
            check_subject(api, staff.email, _who(staff))
    else:
        with app_graph_api(access.microsoft, microsoft_credentials(vault, account), mailbox=staff.email,
                           allow_private=access.allow_private, limits=access.limits) as graph:
            check_mailbox(graph, staff.email, _who(staff))


@dataclass(frozen=True)
class MemberRow:
    """One line of the admin's table."""

    staff: Staff
    check: CompanyAccountMember | None
    connection: Connection | None


def check_account(session: Session, company: Company, access: CompanyAccess, vault: Vault,
                  account: CompanyAccount, staff_ids: list[int] | None = None,
                  until: float | None = None) -> list[MemberRow]:
    """Try every staff member (or those named) and record each result; an account-level
    refusal stops at the first staff member and marks the account `error`. `until`: a
    time.monotonic() after which the rest are left as they were (a person is waiting). Runs the
    provider requests inside the caller's transaction: the caller commits."""
    now = utcnow()
    staff = [s for s in list_staff(session, company) if staff_ids is None or s.id in staff_ids]
    account.checked_at = now
    account.status, account.last_error = CompanyAccountStatus.OK, None
    for member in staff:
        if until is not None and time.monotonic() > until:
            break
        reachable, problem, message = True, None, None
        try:
            check_member(access, vault, account, member)
        except AccountRefused as exc:
            account.status, account.last_error = CompanyAccountStatus.ERROR, str(exc)
            break
        except MemberRefused as exc:
            reachable, problem, message = False, exc.code, str(exc)
        except StoreUnavailable as exc:
            reachable, problem, message = False, exc.kind, str(exc)
        row = session.get(CompanyAccountMember, (account.id, member.id))
        if row is None:
            row = CompanyAccountMember(account_id=account.id, staff_id=member.id)
            session.add(row)
        row.address, row.reachable, row.problem, row.message, row.checked_at = (
            member.email, reachable, problem, message, now)
    session.flush()
    return member_rows(session, company, account)


def member_rows(session: Session, company: Company, account: CompanyAccount) -> list[MemberRow]:
    checks = {m.staff_id: m for m in session.scalars(
        select(CompanyAccountMember).where(CompanyAccountMember.account_id == account.id))}
    connections = {c.staff_id: c for c in session.scalars(
        select(Connection).where(Connection.company_account_id == account.id))}
    return [MemberRow(s, checks.get(s.id), connections.get(s.id)) for s in list_staff(session, company)]


def connect_member(session: Session, company: Company, access: CompanyAccess, vault: Vault,
                   account: CompanyAccount, staff_id: int, *, linked: bool = True,
                   sync_mode: str = SyncMode.REALTIME) -> Connection:
    """The staff member's primary calendar through the account, with the roles `conflict`
    (busy time) and, unless they already have one, `linked` (bookings written there, two-way).
    Checked first: a calendar that cannot be reached is refused with the sentence why."""
    staff = get_staff(session, company, staff_id)
    existing = session.scalar(select(Connection).where(Connection.company_account_id == account.id,
                                                       Connection.staff_id == staff.id))
    if existing is not None:
        return existing
    try:
        check_member(access, vault, account, staff)
    except StoreUnavailable as exc:
        raise ValidationError(str(exc), "staff_id") from None
    has_linked = any(Role.LINKED in (c.roles or []) for c in session.scalars(
        select(Connection).where(Connection.staff_id == staff.id)))
    roles = [Role.CONFLICT] + ([Role.LINKED] if linked and not has_linked else [])
    kind = ConnectionKind.GOOGLE if account.provider == ProviderKind.GOOGLE else ConnectionKind.MICROSOFT
    name = f"{staff.name}'s calendar ({PROVIDER_NAMES[account.provider]}, company account)"
    now = utcnow()
    conn = Connection(
        company_id=company.id, staff_id=staff.id, kind=kind, name=name[:200],
        # No address and no tokens of its own: the account is the credential.
        url_sealed=vault.seal(f"{kind}:{staff.email}"), url_display=f"{staff.email} (company account)",
        account_email=staff.email, remote_calendar_id="primary", access_role="owner", writable=True,
        company_account_id=account.id, roles=[str(r) for r in roles], sync_mode=SyncMode(sync_mode),
        interval_minutes=30, status=ConnectionStatus.PENDING, next_sync_at=now, created_at=now,
        updated_at=now, extra={},
    )
    session.add(conn)
    session.flush()
    return conn


@contextmanager
def open_company_store(sessions: sessionmaker[Session], vault: Vault, access: CompanyAccess,
                       connection_id: int, *, limits: FetchLimits | None = None,
                       window: tuple[datetime, datetime] | None = None,
                       max_items: int = 20_000) -> Iterator[CalendarStore]:
    """The calendar of a connection made through a company account, as a store for one
    conversation. The rows are read in a short session of their own, closed before any
    network use (as provider_access.open_provider_store does)."""
    with sessions() as session:
        conn = session.get(Connection, connection_id)
        account = session.get(CompanyAccount, conn.company_account_id) if conn is not None else None
        if conn is None or account is None:
            raise AccountRefused("The company-wide account this calendar was connected through was removed; "
                                 "connect the account again on the Calendar sync page.")
        provider, address = account.provider, conn.account_email or ""
        calendar_id = conn.remote_calendar_id or "primary"
        key = google_key(vault, account) if provider == ProviderKind.GOOGLE else None
        credentials = microsoft_credentials(vault, account) if key is None else None
    limits = limits or access.limits
    if key is not None:
        with open_delegated_google_store(access.google, key, address, calendar_id,
                                         allow_private=access.allow_private, limits=limits,
                                         max_items=max_items, sleep=access.sleep) as store:
            yield store
        return
    assert credentials is not None
    with open_app_graph_store(access.microsoft, credentials, address, calendar_id,
                              allow_private=access.allow_private, limits=limits, window=window,
                              max_items=max_items, sleep=access.sleep) as graph:
        yield graph



@contextmanager
def open_company_channels(session: Session, vault: Vault, access: CompanyAccess,
                          conn: Connection) -> Iterator[ChangeChannels]:
    """The change notifications of a connection made through a company account: it has no
    tokens of its own, so its channels are opened with the account's credentials for the staff
    member's address — Graph: the app-only token (the application permission Calendars.Read
    or Calendars.ReadWrite lets an app subscribe to /users/{address}/events; the tenant's RBAC
    for Applications scope applies as to reads); Google: a token minted for the address by
    domain-wide delegation. The network is used only inside the returned context."""
    account = session.get(CompanyAccount, conn.company_account_id) \
        if conn.company_account_id is not None else None
    if account is None:
        raise AccountRefused("The company-wide account this calendar was connected through was removed; "
                             "connect the account again on the Calendar sync page.")
    address, calendar_id = conn.account_email or "", conn.remote_calendar_id or "primary"
    if account.provider == ProviderKind.MICROSOFT:
        credentials = microsoft_credentials(vault, account)
        with app_graph_api(access.microsoft, credentials, mailbox=address, allow_private=access.allow_private,
                           limits=access.limits, sleep=access.sleep) as api:
            yield GraphChannels(api, calendar_id, user=address)
        return
    with delegated_google_api(access.google, google_key(vault, account), address,
                              allow_private=access.allow_private, limits=access.limits,
                              sleep=access.sleep) as delegated:
        if delegated.tokens is None or delegated.tokens.expires_at < time.time() + 300:
            delegated.refresh()  # a token for the address, good for the few requests below
        tokens: Tokens | None = delegated.tokens
        assert tokens is not None  # refresh() sets them or raises
        google = GoogleProvider(access.google, NO_CLIENT, allow_private=access.allow_private,
                                limits=access.limits, sleep=access.sleep)
        yield GoogleChannels(google, tokens, calendar_id)
