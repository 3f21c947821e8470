"""The provider-neutral OAuth pieces (feeds.calendars.providers.base) and the Google event
conversion (providers.google_events), without servers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from calsync.feeds.calendars.providers.base import (
    STATE_SECONDS,
    MemoryNonceLedger,
    OAuthStateInvalid,
    StateSealer,
    new_pkce,
    s256_challenge,
)
from calsync.feeds.calendars.providers.google_events import event_id_for, from_ical, to_ical
from calsync.feeds.calendars.twoway import parse_remote


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    assert s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    pkce = new_pkce()
    assert 43 <= len(pkce.verifier) <= 128 and pkce.challenge == s256_challenge(pkce.verifier)
    assert new_pkce().verifier != pkce.verifier


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_state_is_bound_expiring_and_single_use() -> None:
    clock = Clock()
    sealer = StateSealer("app-secret", clock=clock)
    ledger = MemoryNonceLedger(clock=clock)
    pkce = new_pkce()
    state = sealer.issue(7, "google", pkce)
    assert pkce.verifier not in state  # sealed: the browser carries it but cannot read it
    opened = sealer.open(state, staff_id=7, provider="google", ledger=ledger)
    assert opened.code_verifier == pkce.verifier and opened.staff_id == 7
    with pytest.raises(OAuthStateInvalid, match="already used"):
        sealer.open(state, staff_id=7, provider="google", ledger=ledger)
    other = sealer.issue(7, "google", pkce)
    with pytest.raises(OAuthStateInvalid, match="another person"):
        sealer.open(other, staff_id=8, provider="google", ledger=ledger)
    with pytest.raises(OAuthStateInvalid, match="another person"):
        sealer.open(other, staff_id=7, provider="microsoft", ledger=ledger)
    clock.now += STATE_SECONDS
    with pytest.raises(OAuthStateInvalid, match="ten minutes"):
        sealer.open(other, staff_id=7, provider="google", ledger=ledger)
    forged = StateSealer("another-secret", clock=clock).issue(7, "google", pkce)
    for bad in (forged, "not-a-state", state[:-4]):
        with pytest.raises(OAuthStateInvalid, match="not issued by this calsync"):
            sealer.open(bad, staff_id=7, provider="google", ledger=ledger)


def test_the_state_carries_msals_flow_sealed() -> None:
    clock = Clock()
    sealer = StateSealer("app-secret", clock=clock)
    flow = {"redirect_uri": "https://cal.example.test/oauth/microsoft/callback", "code_verifier": "v" * 43,
            "scope": ["https://graph.microsoft.com/User.Read", "offline_access", "openid", "profile"],
            "nonce": "n0nce-of-the-flow", "claims_challenge": None}
    state = sealer.issue(7, "microsoft", nonce="row-nonce", flow=flow)
    assert "v" * 43 not in state and "n0nce" not in state  # Microsoft's verifier and nonce: sealed
    opened = sealer.open(state, staff_id=7, provider="microsoft", ledger=MemoryNonceLedger(clock=clock))
    assert opened.flow == flow and opened.nonce == "row-nonce" and opened.code_verifier == ""
    assert sealer.peek(sealer.issue(7, "google", new_pkce())).flow is None  # type: ignore[union-attr]


def test_event_ids_are_deterministic_base32hex() -> None:
    first = event_id_for("booking-1@calsync")
    assert first == event_id_for("booking-1@calsync") != event_id_for("booking-2@calsync")
    assert len(first) == 32 and set(first) <= set("0123456789abcdefghijklmnopqrstuv")


BODY = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:u1\r\n"
    b"DTSTAMP:20270101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20270329T090000\r\n"
    b"DTEND;TZID=Europe/Berlin:20270329T100000\r\nSEQUENCE:2\r\nSUMMARY:Cut\r\n"
    b"RRULE:FREQ=WEEKLY;COUNT=2\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def test_a_zoned_body_becomes_a_google_event_and_back() -> None:
    event = from_ical(BODY)
    assert event["start"] == {"dateTime": "2027-03-29T09:00:00+02:00", "timeZone": "Europe/Berlin"}
    assert event["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=2"] and event["sequence"] == 2
    back = to_ical([{**event, "id": "abcde", "etag": '"1"', "status": "confirmed"}], "abcde")
    remote = parse_remote(back)
    assert remote.start == datetime(2027, 3, 29, 7, tzinfo=UTC)
    assert remote.uid == "u1" and remote.sequence == 2
    assert b"RRULE:FREQ=WEEKLY;COUNT=2" in back


def test_all_day_and_unreadable_bodies() -> None:
    all_day = BODY.replace(b"DTSTART;TZID=Europe/Berlin:20270329T090000", b"DTSTART;VALUE=DATE:20270329")
    all_day = all_day.replace(b"DTEND;TZID=Europe/Berlin:20270329T100000\r\n", b"")
    event = from_ical(all_day)
    assert event["start"] == {"date": "2027-03-29"}
    assert event["end"] == {"date": date(2027, 3, 30).isoformat()}  # RFC 5545 §3.6.1: the day
    with pytest.raises(ValueError, match="UID"):
        from_ical(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n")
