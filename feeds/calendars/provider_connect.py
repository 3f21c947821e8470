"""Connecting a Google or Microsoft calendar through OAuth (issues 11/12), the way the web pages
do it — three steps, each a function the views call:

1. `start_connect`: a sealed state (staff member, provider, nonce, and what redeeming the code
   needs: Google's PKCE verifier, or msal's auth code flow for Microsoft — its verifier and
   OpenID Connect nonce) and an oauth_state row for its nonce → the provider's consent address.
2. The provider sends the person back to the fixed callback address. `accept_callback` opens
   the state for the staff member whose page it lands on and marks its row used with one
   conditional UPDATE (DatabaseNonceLedger): forged, expired, reused or another person's →
   OAuthStateInvalid, a sentence. Then `exchange_and_list` trades the code for tokens and lists
   the account's calendars; tokens and list travel to the pick page sealed with the credentials
   key (like a CalDAV discovery, feeds.calendars.adding), bound to the staff member, 20 minutes.
3. `connect_picked`: the chosen calendars with their roles — busy time, linked (one per staff
   member), copy — become connections; calendars that cannot be written are refused for
   linked/copy with a sentence. Connecting an account again (after its consent expired) gives
   its existing connections the new tokens and syncs them at once: their queued writes go out.

`disconnect` revokes the tokens at the provider (best effort, and only when no other
connection uses the same consent) and removes our events from the calendar only when asked.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import CredentialsError, Vault
from calsync.feeds.calendars.adding import DISCOVERY_MINUTES
from calsync.feeds.calendars.channels import stop_channels_before_disconnect
from calsync.feeds.calendars.connections import list_connections
from calsync.feeds.calendars.provider_access import (
    PROVIDER_KINDS,
    PROVIDER_LABELS,
    ProviderSetup,
    open_provider_store,
    open_tokens,
    revoke_tokens,
    seal_tokens,
)
from calsync.feeds.calendars.providers.base import (
    STATE_SECONDS,
    OAuthState,
    ReconnectNeeded,
    RemoteCalendar,
    StateSealer,
    Tokens,
    new_pkce,
)
from calsync.feeds.calendars.providers.microsoft_account import MicrosoftProvider
from calsync.feeds.calendars.store import ItemNotFound, PreconditionFailed, StoreError, StoreUnavailable
from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import ValidationError
from calsync.feeds.scheduling.busy_timeline import forget as forget_busy_time
from calsync.feeds.scheduling.calendar_copies import queue_existing
from calsync.feeds.sources.fetch import FetchError, FetchLimits
from calsync.models import (
    WRITE_ROLES,
    Company,
    Connection,
    ConnectionStatus,
    LinkedItem,
    OAuthStateRecord,
    Staff,
    utcnow,
)

log = logging.getLogger("calsync.providers")

READ_ONLY_REASON = (
    "shared with you read-only, so bookings cannot be written to it: it can only be used for busy "
    "time. Ask its owner for permission to make changes to events to link it."
)


def state_sealer(secret_key: str, clock: Callable[[], float] = time.time) -> StateSealer:
    return StateSealer(secret_key, clock)


# --- 1. start ---------------------------------------------------------------------------------


def start_connect(session: Session, setup: ProviderSetup, sealer: StateSealer, *, staff: Staff, kind: str,
                  purpose: str, redirect_uri: str, limits: FetchLimits | None = None,
                  now: datetime | None = None) -> str:
    """The provider's consent address for `staff`; ProviderNotConfigured when the operator
    has not registered a client, a ValidationError (a sentence) when Microsoft's sign-in
    service cannot be reached (msal reads its configuration first). Writes the state's row
    (the caller commits)."""
    provider = setup.provider(kind, limits)
    now = now or utcnow()
    # Rows of states nobody came back with are of no use once expired.
    session.execute(delete(OAuthStateRecord).where(OAuthStateRecord.expires_at < now - timedelta(days=1)))
    nonce = secrets.token_urlsafe(24)
    if isinstance(provider, MicrosoftProvider):
        with _asking(kind, "start the connection"):
            address = provider.sign_in_url(redirect_uri=redirect_uri, seal=lambda flow: sealer.issue(
                staff.id, kind, nonce=nonce, flow=flow))
    else:
        pkce = new_pkce()
        address = provider.authorise_url(state=sealer.issue(staff.id, kind, pkce, nonce=nonce),
                                         code_challenge=pkce.challenge, redirect_uri=redirect_uri)
    session.add(OAuthStateRecord(nonce=nonce, company_id=staff.company_id, staff_id=staff.id, provider=kind,
                                 purpose=purpose, created_at=now,
                                 expires_at=now + timedelta(seconds=STATE_SECONDS)))
    session.flush()
    return address


@contextmanager
def _asking(kind: str, what: str) -> Iterator[None]:
    """A provider that cannot be reached, or answers what it should not, as a sentence."""
    try:
        yield
    except ReconnectNeeded:
        raise
    except (FetchError, StoreUnavailable) as exc:
        raise ValidationError(f"{PROVIDER_LABELS[kind]} could not be reached to {what}: {exc} "
                              "Try again in a moment.", "provider") from exc


# --- 2. the callback --------------------------------------------------------------------------


def callback_record(session: Session, sealer: StateSealer, state: str) -> OAuthStateRecord | None:
    """The row of the state a callback brings, if it is one of ours: where it belongs (whose
    page, which purpose). Whether it is accepted is `accept_callback`'s decision."""
    peeked = sealer.peek(state)
    if peeked is None:
        return None
    return session.scalar(select(OAuthStateRecord).where(OAuthStateRecord.nonce == peeked.nonce))


class DatabaseNonceLedger:
    """Single use across every worker: the first callback sets used_at, with a conditional
    UPDATE that only one transaction can win."""

    def __init__(self, session: Session, staff_id: int, provider: str, now: datetime) -> None:
        self.session, self.staff_id, self.provider, self.now = session, staff_id, provider, now

    def use(self, nonce: str, expires_at: float) -> bool:
        done = self.session.execute(
            update(OAuthStateRecord)
            .where(OAuthStateRecord.nonce == nonce, OAuthStateRecord.staff_id == self.staff_id,
                   OAuthStateRecord.provider == self.provider, OAuthStateRecord.used_at.is_(None))
            .values(used_at=self.now).execution_options(synchronize_session=False))
        return done.rowcount == 1  # type: ignore[attr-defined]


def accept_callback(session: Session, sealer: StateSealer, *, staff_id: int, kind: str, state: str,
                    now: datetime | None = None) -> OAuthState:
    """The callback's state, accepted once for `staff_id` (the caller commits at once, before
    the code exchange); OAuthStateInvalid otherwise."""
    return sealer.open(state, staff_id=staff_id, provider=kind,
                       ledger=DatabaseNonceLedger(session, staff_id, kind, now or utcnow()))


@dataclass(frozen=True)
class Pick:
    """What a consent found: the account, its calendars, the tokens (sealed in the page)."""

    staff_id: int
    kind: str
    account: str | None
    tokens: Tokens
    calendars: list[RemoteCalendar]


def exchange_and_list(vault: Vault, setup: ProviderSetup, *, staff_id: int, kind: str, accepted: OAuthState,
                      state: str, answer: Mapping[str, str], redirect_uri: str,
                      limits: FetchLimits | None = None,
                      clock: Callable[[], float] = time.time) -> tuple[Pick, str]:
    """The callback's `answer` (its query: the code) for tokens — with the `accepted` state,
    whose sealed text is `state` — the account's calendars, and the sealed pick for the next
    page. A provider that refuses or cannot be reached is a ValidationError (a sentence)."""
    provider = setup.provider(kind, limits)
    try:
        with _asking(kind, "finish the connection"):
            if isinstance(provider, MicrosoftProvider):
                tokens = provider.finish_sign_in(flow=accepted.flow or {}, state=state, answer=answer)
            else:
                tokens = provider.exchange_code(code=answer.get("code", ""), redirect_uri=redirect_uri,
                                                code_verifier=accepted.code_verifier)
            calendars = provider.list_calendars(tokens)
            if isinstance(provider, MicrosoftProvider):
                account = provider.account_address(tokens)
            else:  # Google names a primary calendar by its owner's address
                account = next((c.id for c in calendars if c.primary and "@" in c.id), None)
    except ReconnectNeeded as exc:  # the code was refused: used twice, too old, another client's
        raise ValidationError(f"{PROVIDER_LABELS[kind]} did not accept the sign-in (it may have taken "
                              "too long); start the connection again.", "provider") from exc
    if not calendars:
        raise ValidationError(f"The {PROVIDER_LABELS[kind]} account lists no calendars.", "provider")
    pick = Pick(staff_id, kind, account, tokens, calendars)
    sealed = vault.seal(json.dumps({
        "s": staff_id, "k": kind, "t": int(clock()), "a": account,
        "tok": [tokens.access_token, tokens.refresh_token, tokens.expires_at, tokens.scope],
        "c": [[c.id, c.name, c.colour, c.access_role, c.primary] for c in calendars]}))
    return pick, sealed


def open_pick(vault: Vault, sealed: str, staff_id: int, kind: str, *,
              clock: Callable[[], float] = time.time) -> Pick:
    expired = ValidationError(f"The list of calendars is too old or was not found; connect "
                              f"{PROVIDER_LABELS.get(kind, kind)} again.", "calendars")
    try:
        data = json.loads(vault.open(sealed))
        if data["s"] != staff_id or data["k"] != kind or clock() - data["t"] > DISCOVERY_MINUTES * 60:
            raise expired
        access, refresh, expires_at, scope = data["tok"]
        return Pick(staff_id, kind, data.get("a"), Tokens(access, refresh, float(expires_at), scope),
                    [RemoteCalendar(str(i), str(n), c, str(r), bool(p)) for i, n, c, r, p in data["c"]])
    except (CredentialsError, ValueError, KeyError, TypeError):
        raise expired from None


# --- 3. connect the chosen calendars ----------------------------------------------------------


def connect_picked(session: Session, company: Company, vault: Vault, pick: Pick, *, conflict: Iterable[int],
                   linked: int | None, additional: Iterable[int], push_existing: bool = False,
                   now: datetime | None = None) -> list[Connection]:
    """Connect the chosen calendars (indexes into pick.calendars), in the caller's transaction."""
    now = now or utcnow()
    roles: dict[int, list[str]] = {}
    for index in conflict:
        roles.setdefault(index, []).append("conflict")
    if linked is not None:
        roles.setdefault(linked, []).append("linked")
    for index in additional:
        roles.setdefault(index, []).append("additional")
    if not roles:
        raise ValidationError("Choose at least one calendar and what it is used for.", "calendars")
    for index, wanted in roles.items():
        if not 0 <= index < len(pick.calendars):
            raise ValidationError("That calendar is not in the list the provider gave.", "calendars")
        calendar = pick.calendars[index]
        if set(wanted) & WRITE_ROLES and not calendar.writable:
            raise ValidationError(f"'{calendar.name}' is {READ_ONLY_REASON}", "roles")
    mine = list_connections(session, company, pick.staff_id)
    same_account = [c for c in mine if c.kind == pick.kind and c.account_email == pick.account]
    by_calendar = {c.remote_calendar_id: c for c in same_account}
    if linked is not None and any("linked" in (c.roles or []) for c in mine
                                  if c is not by_calendar.get(pick.calendars[linked].id)):
        staff = session.get(Staff, pick.staff_id)
        raise ValidationError(f"{staff.name if staff else 'This staff member'} already has a linked "
                              "calendar; a staff member has one. Remove it first.", "roles")
    sealed = seal_tokens(vault, pick.tokens)
    for conn in same_account:  # one consent: every calendar of the account uses the new tokens
        conn.tokens_sealed = sealed
        if conn.status == ConnectionStatus.ERROR:
            conn.next_sync_at = now  # reconnected: sync now, and send the writes that waited
    settings = get_company_settings(company)
    label = PROVIDER_LABELS[pick.kind]
    made = []
    for index, wanted in sorted(roles.items()):
        calendar = pick.calendars[index]
        ordered: list[str] = [r for r in ("conflict", "linked", "additional") if r in wanted]
        existing = by_calendar.get(calendar.id)
        if existing is None:
            conn = Connection(
                company_id=company.id, staff_id=pick.staff_id, kind=pick.kind, name=calendar.name[:200],
                url_sealed=vault.seal(f"{pick.kind}:{calendar.id}"),
                url_display=f"{label} · {pick.account or calendar.name}"[:300],
                tokens_sealed=sealed, account_email=pick.account, remote_calendar_id=calendar.id,
                colour=str(calendar.colour)[:16] if calendar.colour else None,
                access_role=calendar.access_role,
                roles=ordered, writable=calendar.writable, sync_mode=settings.default_sync_mode,
                interval_minutes=settings.default_interval_minutes, all_day="busy", treat_all_busy=False,
                status=ConnectionStatus.PENDING, next_sync_at=now, created_at=now, updated_at=now, extra={})
            session.add(conn)
        else:
            conn = existing
            conn.roles, conn.writable, conn.access_role = ordered, calendar.writable, calendar.access_role
            conn.next_sync_at, conn.updated_at = now, now
        session.flush()
        if push_existing and set(ordered) & WRITE_ROLES:
            queue_existing(session, conn, now)  # only when asked (the same offer as for CalDAV)
        made.append(conn)
    return made


# --- disconnect -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disconnected:
    name: str
    removed_events: int
    revoked: bool


def disconnect(sessions: sessionmaker[Session], vault: Vault, setup: ProviderSetup, connection_id: int, *,
               remove_events: bool, limits: FetchLimits | None = None) -> Disconnected:
    """Remove a Google/Microsoft connection: our events in its calendar first when asked (best
    effort: one that changed since we wrote it is left alone), then the tokens revoked at the
    provider if no other connection shares the consent, then the row. Runs its own
    transactions; no transaction is open while the provider is asked."""
    with sessions() as session:
        conn = session.get(Connection, connection_id)
        if conn is None or conn.kind not in PROVIDER_KINDS:
            raise ValidationError("That is not a Google or Microsoft connection.", "connection")
        name, kind, sealed = conn.name, conn.kind, conn.tokens_sealed
        ours = [(h, e) for h, e in session.execute(select(LinkedItem.href, LinkedItem.etag).where(
            LinkedItem.connection_id == conn.id, LinkedItem.href.is_not(None))) if h]
        # Calendars picked in one consent share its refresh token: revoking it would cut them
        # off too, so it is only revoked with the last of them.
        others = session.scalars(select(Connection.tokens_sealed).where(
            Connection.id != conn.id, Connection.staff_id == conn.staff_id, Connection.kind == conn.kind,
            Connection.tokens_sealed.is_not(None))).all()
        sharing = _shares_consent(vault, kind, sealed, others)
    removed = 0
    if remove_events and ours:
        try:
            with open_provider_store(sessions, vault, setup, connection_id, limits=limits) as store:
                for href, etag in ours:
                    try:
                        store.delete(href, etag)
                        removed += 1
                    except (ItemNotFound, PreconditionFailed):
                        continue  # gone already, or changed by the staff member: theirs now
        except (StoreError, FetchError) as exc:
            log.info("removing our events of connection %s failed: %s", connection_id, type(exc).__name__)
    # Change channels (Google watch / Graph subscription) are stopped while the tokens still work.
    stop_channels_before_disconnect(sessions, vault, setup, connection_id)
    revoked = False if sharing else revoke_tokens(vault, setup, kind, sealed)
    with sessions.begin() as session:
        conn = session.get(Connection, connection_id)
        if conn is not None:
            forget_busy_time(session, connection_id)
            session.delete(conn)
    return Disconnected(name, removed, revoked)


def _shares_consent(vault: Vault, kind: str, sealed: str | None, others: Iterable[str | None]) -> bool:
    if not sealed:
        return False
    label = PROVIDER_LABELS[kind]
    try:
        mine = open_tokens(vault, sealed, label).refresh_token
    except ReconnectNeeded:
        return False
    for other in others:
        try:
            if other and mine and open_tokens(vault, other, label).refresh_token == mine:
                return True
        except ReconnectNeeded:
            continue
    return False
