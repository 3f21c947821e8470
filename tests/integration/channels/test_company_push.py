"""Change notifications for connections made through a company-wide account (issues 11/12,
"corporate" mode): they have no tokens of their own, so their subscriptions are made with the
account's credentials for the staff member's mailbox — Graph's app-only token on
/users/{address}/events, Google's token minted for the address by domain-wide delegation —
validated, delivered and renewed like any other; an app registration the identity platform
refuses is a failed channel (the connection keeps polling), not an exception."""

from __future__ import annotations

import json
from datetime import timedelta

from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars import company_accounts as ca
from calsync.feeds.calendars.channels import ensure_channel, secret_hash
from calsync.feeds.calendars.providers import company_microsoft
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.scheduling.directory import create_staff
from calsync.models import Company, CompanyAccount, Connection, utcnow
from tests.channel_helpers import BASE, live, sync_requested
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph
from tests.fakes.push import PushingGoogleFake, PushingGraphFake
from tests.linked_helpers import at
from tests.waiting import wait_until


def _member(app: Flask, company_id: int, provider: str, credentials: dict[str, str], email: str) -> int:
    """A company account of `provider` and the staff member `email` connected through it, as the
    admin's page does it (realtime mode, the default)."""
    services = app.extensions["calsync"]
    access = ca.CompanyAccess.of_setup(services.sync.providers)
    with services.sessions.begin() as session:
        company = session.get(Company, company_id)
        assert company is not None
        staff = create_staff(session, company, name="Max", email=email)
        if provider == "microsoft":
            account = ca.connect_microsoft_account(session, company, services.vault, **credentials)
        else:
            account = ca.connect_google_account(session, company, services.vault, credentials["key"])
        conn = ca.connect_member(session, company, access, services.vault, account, staff.id)
        assert conn.sync_mode == "realtime" and conn.tokens_sealed is None
        return conn.id


def test_a_company_wide_microsoft_connection_subscribes_with_the_app_token(
        app: Flask, company_id: int, graph: ServedGraph, served: str) -> None:
    fake = graph.fake
    assert isinstance(fake, PushingGraphFake)
    client_id, secret = fake.register_app("salon.onmicrosoft.com")
    conn_id = _member(app, company_id, "microsoft",
                      {"tenant": "salon.onmicrosoft.com", "client_id": client_id, "client_secret": secret},
                      "max@salon.example")
    channels = app.extensions["calsync"].channels
    assert ensure_channel(channels, conn_id) == "subscribed"
    [row] = live(app, conn_id)
    [sub] = fake.subscriptions.values()
    assert sub["resource"] == "users/max@salon.example/events"
    assert sub["notificationUrl"] == BASE + "/hooks/microsoft"
    assert row.secret_hash == secret_hash(sub["clientState"])
    [made] = fake.requests_to("POST", "/subscriptions")
    assert made["headers"]["Authorization"].removeprefix("Bearer ") in fake.app_tokens  # app-only
    assert [v.status for v in fake.validations] == [200, 200]
    # A change in the mailbox is notified and queues a sync, which reads through the account.
    fake.put_event(at(2, 10), at(2, 11))
    wait_until(lambda: sync_requested(app, row.id), "a sync requested by the notification")
    outcome = sync_connection(app.extensions["calsync"].sync, conn_id)
    assert outcome.status == "ok" and outcome.busy_count == 1
    # Renewed before it expires (the app token has expired meanwhile: a new grant).
    fake.advance(6.5 * 86400)
    assert ensure_channel(channels, conn_id, now=utcnow() + timedelta(days=6, hours=12)) == "renewed"
    assert [r["status"] for r in fake.requests_to("PATCH", "/subscriptions/")][-1] == 200
    [renewed] = live(app, conn_id)
    assert renewed.channel_id == row.channel_id and renewed.expires_at > row.expires_at


def test_a_company_wide_google_connection_watches_through_the_delegation(
        app: Flask, company_id: int, google: ServedFake, served: str) -> None:
    info = google.fake.add_service_account(google.url + "/token")
    google.fake.add_workspace_user("max@salon.example", "Max")
    conn_id = _member(app, company_id, "google", {"key": json.dumps(info)}, "max@salon.example")
    assert ensure_channel(app.extensions["calsync"].channels, conn_id) == "subscribed"
    [row] = live(app, conn_id)
    assert isinstance(google.fake, PushingGoogleFake)
    [channel] = google.fake.channels.values()
    assert channel["calendar"] == "max@salon.example" and channel["address"] == BASE + "/hooks/google"
    google.fake.deliverer.settle()  # the channel's `sync` message
    google.fake.put_event("max@salon.example", {"start": {"dateTime": "2027-01-04T10:00:00Z"},
                                                "end": {"dateTime": "2027-01-04T11:00:00Z"}})
    wait_until(lambda: sync_requested(app, row.id), "a sync requested by the notification")


def test_a_refused_app_registration_fails_the_channel_and_polling_goes_on(
        app: Flask, company_id: int, graph: ServedGraph, served: str) -> None:
    client_id, secret = graph.fake.register_app("salon.onmicrosoft.com")
    conn_id = _member(app, company_id, "microsoft",
                      {"tenant": "salon.onmicrosoft.com", "client_id": client_id, "client_secret": secret},
                      "max@salon.example")
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        conn = session.get(Connection, conn_id)
        assert conn is not None
        account = session.scalar(select(CompanyAccount).where(CompanyAccount.id == conn.company_account_id))
        assert account is not None
        account.credentials_sealed = services.vault.seal(json.dumps(
            {"tenant": "salon.onmicrosoft.com", "client_id": client_id, "client_secret": "wrong"}))
    company_microsoft.TOKENS.clear()  # the app token cached so far is gone too
    assert ensure_channel(services.channels, conn_id) == "failed"
    assert live(app, conn_id) == []
    with services.sessions.begin() as session:  # the account removed: also a failure, no crash
        ca.disconnect_account(session, session.get(Company, company_id), "microsoft")  # type: ignore[arg-type]
    assert ensure_channel(services.channels, conn_id) == "missing"
