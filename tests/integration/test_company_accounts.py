"""The company-wide connection (issues 11/12, "corporate" mode) against the contract fakes:
a Google Workspace service account with domain-wide delegation (JWT-bearer grant, RFC 7523)
and a Microsoft 365 app with application permissions (client credentials), each for a staff
member who is reachable and one who is refused, with the sentence the admin sees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import Vault, new_key
from calsync.feeds.calendars.company_accounts import (
    CompanyAccess,
    check_account,
    connect_google_account,
    connect_member,
    connect_microsoft_account,
    disconnect_account,
    open_company_store,
)
from calsync.feeds.calendars.provider_access import ProviderSetup, open_provider_store
from calsync.feeds.calendars.providers import company_google, company_microsoft
from calsync.feeds.calendars.providers.base import AccountRefused, MemberRefused
from calsync.feeds.calendars.providers.company_google import (
    check_subject,
    delegated_google_api,
    read_service_account_key,
    signed_assertion,
)
from calsync.feeds.calendars.providers.company_microsoft import (
    AppCredentials,
    app_graph_api,
    check_mailbox,
    read_app_credentials,
)
from calsync.feeds.errors import ValidationError
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.sources.fetch import FetchLimits
from calsync.models import Company, CompanyAccountStatus, Connection, Staff
from tests.fakes.google_calendar import ServedFake, endpoints
from tests.fakes.microsoft_graph import ServedGraph

LIMITS = FetchLimits()


@pytest.fixture(autouse=True)
def _fresh_token_caches() -> Iterator[None]:
    company_google.TOKENS.clear()
    company_microsoft.TOKENS.clear()
    yield
    company_google.TOKENS.clear()
    company_microsoft.TOKENS.clear()


def _access(google: ServedFake | None = None, graph: ServedGraph | None = None) -> CompanyAccess:
    kwargs = {}
    if google is not None:
        kwargs["google"] = endpoints(google)
    if graph is not None:
        kwargs["microsoft"] = graph.endpoints()
    return CompanyAccess(**kwargs, allow_private=True, limits=LIMITS)  # type: ignore[arg-type]


# --- Google: the provider side ----------------------------------------------------------------


def test_google_impersonates_a_delegated_member_and_names_the_ones_outside(google: ServedFake) -> None:
    info = google.fake.add_service_account(google.url + "/token")
    google.fake.add_workspace_user("zoe@salon.example", "Zoë")
    google.fake.add_workspace_user("max@salon.example", "Max", delegated=False)
    google.fake.add_workspace_user("ida@salon.example", "Ida", calendar=False)
    google.fake.put_event("zoe@salon.example", {"summary": "Dentist",
                                                "start": {"dateTime": "2027-01-11T10:00:00Z"},
                                                "end": {"dateTime": "2027-01-11T11:00:00Z"}})
    key = read_service_account_key(json.dumps(info))

    with delegated_google_api(endpoints(google), key, "zoe@salon.example", allow_private=True,
                              limits=LIMITS) as api:
        check_subject(api, "zoe@salon.example")
        listed = api.call("GET", "/calendars/primary/events", params={"singleEvents": "false"})
    assert [e["summary"] for e in listed.json()["items"]] == ["Dentist"]  # Zoë's calendar, not another
    grant = [r for r in google.fake.subjects.values()]
    assert grant == ["zoe@salon.example"]

    with pytest.raises(MemberRefused) as refused, delegated_google_api(
            endpoints(google), key, "max@salon.example", who="Max", allow_private=True, limits=LIMITS) as api:
        check_subject(api, "max@salon.example", "Max")
    assert refused.value.code == "unauthorized_client"
    assert "Max is not in the domain-wide delegation" in str(refused.value)
    assert info["client_id"] in str(refused.value)  # what the admin enters in the Admin console

    with pytest.raises(MemberRefused) as missing, delegated_google_api(
            endpoints(google), key, "ida@salon.example", allow_private=True, limits=LIMITS) as api:
        check_subject(api, "ida@salon.example", "Ida")
    assert missing.value.code == "notFound" and "Ida has no Google Calendar" in str(missing.value)


def test_google_refuses_an_assertion_it_cannot_verify(google: ServedFake) -> None:
    """The fake checks what Google checks: the signature against the account's public key,
    the audience, the lifetime, the scopes of the delegation."""
    info = google.fake.add_service_account(google.url + "/token")
    other = google.fake.add_service_account(google.url + "/token")
    google.fake.add_workspace_user("zoe@salon.example")
    key = read_service_account_key(json.dumps(info))
    token_url = google.url + "/token"

    def answer(assertion: str) -> tuple[int, dict[str, str]]:
        import niquests

        response = niquests.post(token_url, data={"grant_type": company_google.JWT_BEARER,
                                                  "assertion": assertion}, timeout=5)
        return response.status_code, response.json()

    now = google.fake.now()
    assert answer(signed_assertion(key, "zoe@salon.example", token_url, now))[0] == 200
    forged = read_service_account_key(json.dumps({**other, "client_email": info["client_email"]}))
    assert answer(signed_assertion(forged, "zoe@salon.example", token_url, now)) == (
        400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    assert answer(signed_assertion(key, "zoe@salon.example", google.url + "/elsewhere", now))[1][
        "error_description"] == "Invalid JWT: Invalid audience."
    assert answer(signed_assertion(key, "zoe@salon.example", token_url, now - 7200))[0] == 400  # expired
    status, body = answer(signed_assertion(key, "zoe@salon.example", token_url, now,
                                           scopes=("https://www.googleapis.com/auth/gmail.readonly",)))
    assert (status, body["error"]) == (401, "unauthorized_client")
    assert answer(signed_assertion(key, "nobody@salon.example", token_url, now))[1][
        "error_description"] == "Invalid email or User ID"


def test_a_deleted_key_is_the_accounts_problem_not_the_members(google: ServedFake) -> None:
    info = google.fake.add_service_account(google.url + "/token")
    google.fake.add_workspace_user("zoe@salon.example")
    google.fake.service_accounts.clear()  # the admin deleted the key in the Cloud console
    with pytest.raises(AccountRefused, match="upload a new JSON key"), delegated_google_api(
            endpoints(google), read_service_account_key(json.dumps(info)), "zoe@salon.example",
            allow_private=True, limits=LIMITS) as api:
        check_subject(api, "zoe@salon.example")


def test_a_key_file_that_is_not_one_is_a_sentence() -> None:
    with pytest.raises(ValidationError, match="not a JSON key file"):
        read_service_account_key("not json")
    with pytest.raises(ValidationError, match="OAuth client file does not work"):
        read_service_account_key(json.dumps({"web": {"client_id": "x"}}))
    with pytest.raises(ValidationError, match="private key cannot be read"):
        read_service_account_key(json.dumps({"type": "service_account", "client_email": "a@b",
                                             "client_id": "1", "private_key_id": "k", "private_key": "nope"}))


# --- Microsoft: the provider side -------------------------------------------------------------


def test_microsoft_reaches_an_allowed_mailbox_and_names_a_refused_one(graph: ServedGraph) -> None:
    client_id, secret = graph.fake.register_app("salon.onmicrosoft.com")
    graph.fake.refused_users.add("zoe@salon.example")
    credentials = read_app_credentials("salon.onmicrosoft.com", client_id, secret)
    with app_graph_api(graph.endpoints(), credentials, mailbox="max@salon.example", allow_private=True,
                       limits=LIMITS) as api:
        check_mailbox(api, "max@salon.example", "Max")
        assert api.call("GET", api.url("/me/calendars")).status_code == 400  # an app-only token
    with pytest.raises(MemberRefused) as refused, app_graph_api(
            graph.endpoints(), credentials, mailbox="zoe@salon.example", allow_private=True,
            limits=LIMITS) as api:
        check_mailbox(api, "zoe@salon.example", "Zoë")
    assert refused.value.code == "ErrorAccessDenied"
    assert str(refused.value).startswith("Zoë's mailbox is outside the app's allowed mailboxes")
    assert "application access policy" in str(refused.value)
    # One client-credentials grant served both mailboxes (the app-only token is cached).
    assert [(r["tenant"], r["grant_type"], r["status"]) for r in graph.fake.token_requests] == [
        ("salon.onmicrosoft.com", "client_credentials", 200)]
    assert len(graph.fake.app_tokens) == 1


def test_microsoft_refuses_a_wrong_secret_or_tenant_as_the_accounts_problem(graph: ServedGraph) -> None:
    client_id, secret = graph.fake.register_app("salon.onmicrosoft.com")
    wrong_secret = AppCredentials("salon.onmicrosoft.com", client_id, "wrong")
    wrong_tenant = AppCredentials("other.onmicrosoft.com", client_id, secret)
    graph.fake.unknown_tenants.add("gone.onmicrosoft.com")
    no_tenant = AppCredentials("gone.onmicrosoft.com", client_id, secret)
    for credentials, why in ((wrong_secret, "invalid_client"), (wrong_tenant, "unauthorized_client"),
                             (no_tenant, "no configuration for .*gone.onmicrosoft.com")):
        company_microsoft.TOKENS.clear()
        with pytest.raises(AccountRefused, match=why), app_graph_api(
                graph.endpoints(), credentials, mailbox="max@salon.example", allow_private=True,
                limits=LIMITS) as api:
            check_mailbox(api, "max@salon.example")


def test_app_credentials_are_checked_before_they_are_kept() -> None:
    with pytest.raises(ValidationError, match="tenant"):
        read_app_credentials("common", "5f2c6c1e-1234-4000-8000-00000000ca15", "s")
    with pytest.raises(ValidationError, match="GUID"):
        read_app_credentials("salon.onmicrosoft.com", "calsync", "s")
    with pytest.raises(ValidationError, match="secret"):
        read_app_credentials("salon.onmicrosoft.com", "5f2c6c1e-1234-4000-8000-00000000ca15", " ")


# --- the company account in the database ------------------------------------------------------


@pytest.fixture
def session(db: Session, company_id: int) -> Session:
    return db


@pytest.fixture
def sessions(app: Flask) -> sessionmaker[Session]:
    return app.extensions["calsync"].sessions  # type: ignore[no-any-return]


def _staff(session: Session, company: Company, name: str, email: str) -> Staff:
    return create_staff(session, company, name=name, email=email, timezone="Europe/Berlin")


def _company(session: Session, company_id: int) -> Company:
    company = session.get(Company, company_id)
    assert company is not None
    return company


def test_google_company_account_checks_each_member_and_connects_the_reachable(
        session: Session, company_id: int, google: ServedFake, sessions: sessionmaker[Session]) -> None:
    company = _company(session, company_id)
    vault = Vault([new_key()])
    zoe = _staff(session, company, "Zoë Müller", "zoe@salon.example")
    max_ = _staff(session, company, "Max", "max@salon.example")
    info = google.fake.add_service_account(google.url + "/token")
    google.fake.add_workspace_user("zoe@salon.example", "Zoë")
    google.fake.add_workspace_user("max@salon.example", "Max", delegated=False)

    account = connect_google_account(session, company, vault, json.dumps(info))
    assert info["private_key"] not in account.credentials_sealed
    assert account.display.startswith(info["client_email"])
    rows = {r.staff.id: r for r in check_account(session, company, _access(google), vault, account)}
    assert account.status == CompanyAccountStatus.OK
    assert rows[zoe.id].check is not None and rows[zoe.id].check.reachable
    assert rows[max_.id].check is not None and not rows[max_.id].check.reachable
    assert rows[max_.id].check.problem == "unauthorized_client"
    assert "Max (max@salon.example) is not in the domain-wide delegation" in str(rows[max_.id].check.message)

    conn = connect_member(session, company, _access(google), vault, account, zoe.id)
    assert (conn.kind, conn.roles) == ("google", ["conflict", "linked"])
    assert conn.account_email == "zoe@salon.example"
    with pytest.raises(ValidationError, match="domain-wide delegation"):
        connect_member(session, company, _access(google), vault, account, max_.id)

    # The connection's store reaches Zoë's own calendar through the account: a booking written
    # there lands in her primary calendar in the fake.
    body = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:appt-1@calsync\r\n"
            b"DTSTAMP:20270101T000000Z\r\nDTSTART:20270111T100000Z\r\nDTEND:20270111T103000Z\r\n"
            b"SUMMARY:Haircut\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    session.commit()
    setup = ProviderSetup(google_endpoints=endpoints(google), allow_private=True, sleep=lambda _s: None)
    # The way sync opens every provider connection (provider_access); no OAuth client is set up.
    with open_provider_store(sessions, vault, setup, conn.id) as store:
        store.create("appt-1.ics", body)
        assert len(store.list().etags) == 1
    assert [e["summary"] for e in google.fake.calendars["zoe@salon.example"].events.values()] == ["Haircut"]

    assert disconnect_account(session, company, "google") == 1
    assert session.scalars(select(Connection)).all() == []


def test_microsoft_company_account_checks_each_member_and_connects_the_reachable(
        session: Session, company_id: int, graph: ServedGraph, sessions: sessionmaker[Session]) -> None:
    company = _company(session, company_id)
    vault = Vault([new_key()])
    zoe = _staff(session, company, "Zoë Müller", "zoe@salon.example")
    max_ = _staff(session, company, "Max", "max@salon.example")
    client_id, secret = graph.fake.register_app("salon.onmicrosoft.com")
    graph.fake.refused_users.add("zoe@salon.example")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    graph.fake.put_event(start, start + timedelta(hours=1))

    account = connect_microsoft_account(session, company, vault, tenant="salon.onmicrosoft.com",
                                        client_id=client_id, client_secret=secret)
    assert secret not in account.credentials_sealed
    rows = {r.staff.id: r for r in check_account(session, company, _access(graph=graph), vault, account)}
    assert rows[max_.id].check is not None and rows[max_.id].check.reachable
    zoe_check = rows[zoe.id].check
    assert zoe_check is not None and not zoe_check.reachable and zoe_check.problem == "ErrorAccessDenied"
    assert str(zoe_check.message).startswith(
        "Zoë Müller (zoe@salon.example)'s mailbox is outside the app's allowed mailboxes")

    conn = connect_member(session, company, _access(graph=graph), vault, account, max_.id)
    assert conn.kind == "microsoft" and conn.company_account_id == account.id
    session.commit()
    with open_company_store(sessions, vault, _access(graph=graph), conn.id) as store:
        assert len(store.list().etags) == 1
    assert graph.fake.requests_to("GET", "/users/max@salon.example/calendar/calendarView/delta")
    with pytest.raises(ValidationError, match="outside the app's allowed mailboxes"):
        connect_member(session, company, _access(graph=graph), vault, account, zoe.id)


def test_a_refused_account_stops_the_check_and_says_so(session: Session, company_id: int,
                                                      graph: ServedGraph) -> None:
    company = _company(session, company_id)
    vault = Vault([new_key()])
    _staff(session, company, "Max", "max@salon.example")
    client_id, _secret = graph.fake.register_app("salon.onmicrosoft.com")
    account = connect_microsoft_account(session, company, vault, tenant="salon.onmicrosoft.com",
                                        client_id=client_id, client_secret="expired-secret")
    rows = check_account(session, company, _access(graph=graph), vault, account)
    assert account.status == CompanyAccountStatus.ERROR and "client secret" in (account.last_error or "")
    assert all(r.check is None for r in rows)
