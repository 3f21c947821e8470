"""Outbox delivery over SMTP against a real server (aiosmtpd on loopback): outages, retries with
backoff, giving up, leases between concurrent workers, the queue, and the password's secrecy."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
from flask import Flask
from pydantic import SecretStr

from calsync.feeds.errors import ConfigurationError
from calsync.feeds.mail.delivery import _lease, deliver_due, retry_delay
from calsync.feeds.mail.smtp import parse_smtp_url
from calsync.feeds.settings import Settings, load_settings
from calsync.models import utcnow
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY
from tests.mail_helpers import deliver, mail_context, outbox, parse_imip, with_mail
from tests.servers import SmtpSink
from tests.waiting import wait_until

SECRET = "s3cr%t:p@ss/w#rd?&= +"  # characters that must be URL-encoded in the URL


def book_many(api: Api, n: int) -> list[dict[str, object]]:
    staff = api.make_staff(working_hours=ALL_DAY)
    booked = []
    for i in range(n):
        resp = api.book(staff["id"], f"2030-01-07T{i // 2:02d}:{30 * (i % 2):02d}:00Z",
                        f"2030-01-07T{i // 2:02d}:{30 * (i % 2) + 29:02d}:00Z",
                        customer={"name": f"Customer {i}", "email": f"c{i}@example.com"})
        assert resp.status_code == 201, resp.get_json()
        booked.append(resp.get_json())
    return booked


# --- CALSYNC_SMTP_URL --------------------------------------------------------------------------


def test_smtp_urls_are_parsed_and_the_password_decoded() -> None:
    cfg = parse_smtp_url(f"smtp://mailer:{quote(SECRET, safe='')}@mail.example.com:587?starttls=1")
    assert (cfg.host, cfg.port, cfg.tls, cfg.username, cfg.password) == (
        "mail.example.com", 587, "starttls", "mailer", SECRET)
    assert SECRET not in repr(cfg) and quote(SECRET, safe="") not in repr(cfg)
    assert parse_smtp_url("smtps://u:p@mail.example.com").port == 465
    assert parse_smtp_url("smtps://u:p@mail.example.com").tls == "ssl"
    assert parse_smtp_url("smtp://relay.internal").port == 25
    assert parse_smtp_url("smtp://relay.internal").username is None
    assert parse_smtp_url("SMTP://relay.internal?starttls=1").port == 587


@pytest.mark.parametrize("url", [
    "http://u:hunter2-secret@mail.example.com", "smtp://u:hunter2-secret@:25",
    "smtp://u:hunter2-secret@mail.example.com:99999", "smtp://u:hunter2-secret@h?tls=1",
    "smtps://u:hunter2-secret@h?starttls=1", "smtp://u:hunter2-secret@h?starttls=maybe",
    "smtp://u:hunter2-secr%C3%A9t@h",
])
def test_bad_smtp_urls_are_refused_without_repeating_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={"CALSYNC_SMTP_URL": url})
    assert "CALSYNC_SMTP_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_settings_never_show_the_smtp_password() -> None:
    settings = load_settings(environ={"CALSYNC_SMTP_URL": "smtp://u:hunter2-secret@h:25",
                                      "CALSYNC_MAIL_FROM": "bookings@salon.example",
                                      "CALSYNC_MAIL_MAX_ATTEMPTS": "3"})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert settings.smtp_url == SecretStr("smtp://u:hunter2-secret@h:25")
    assert settings.mail_max_attempts == 3
    with pytest.raises(ConfigurationError, match="CALSYNC_MAIL_FROM"):
        load_settings(environ={"CALSYNC_MAIL_FROM": "Bookings <b@x.example>\r\nBcc: y@x.example"})
    assert load_settings(environ={}).smtp_url is None
    assert load_settings(environ={}).mail_from == "calsync@localhost"


# --- delivery ----------------------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(settings, smtp_url=smtp_server.url, mail_max_attempts=4)


def test_without_a_mail_server_emails_wait_in_the_outbox(app: Flask, api: Api, settings: Settings) -> None:
    # A second app on the same database, without CALSYNC_SMTP_URL.
    from calsync.web import create_app

    plain = create_app(settings.model_copy(update={"smtp_url": None}))
    try:
        book_many(api, 1)
        report = deliver_due(plain.extensions["calsync"].mail)
        assert report.not_configured and report.sent == 0
        assert [(e.status, e.attempts) for e in outbox(app)] == [("pending", 0)]
        assert api.get("/emails?status=pending").get_json()["emails"][0]["status"] == "pending"
    finally:
        plain.extensions["calsync"].engine.dispose()


def test_mail_server_down_then_back_each_email_arrives_exactly_once(
    app: Flask, api: Api, smtp_server: SmtpSink
) -> None:
    book_many(api, 3)
    smtp_server.stop()
    now = utcnow()
    report = deliver(app, now)
    assert (report.sent, report.failed_attempts) == (0, 3)
    rows = outbox(app)
    assert [(e.status, e.attempts) for e in rows] == [("pending", 1)] * 3
    assert all("could not be reached" in (e.last_error or "") for e in rows)
    assert all(e.next_attempt_at is not None and e.next_attempt_at > now for e in rows)
    # Not due again yet: nothing is attempted.
    assert deliver(app, now).failed_attempts == 0
    later = now + timedelta(minutes=1, seconds=1)
    assert deliver(app, later).failed_attempts == 3
    assert [e.attempts for e in outbox(app)] == [2, 2, 2]
    assert all(e.next_attempt_at and e.next_attempt_at >= later + timedelta(minutes=2)
               for e in outbox(app))
    smtp_server.start()
    assert deliver(app, later + timedelta(minutes=3)).sent == 3
    assert deliver(app, later + timedelta(hours=9)).sent == 0
    counts = smtp_server.by_message_id()
    assert len(counts) == 3 and set(counts.values()) == {1}
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == [
        "c0@example.com", "c1@example.com", "c2@example.com"]
    assert [(e.status, e.last_error) for e in outbox(app)] == [("sent", None)] * 3
    assert all(e.sent_at is not None for e in outbox(app))
    # Two failed attempts and the one that went through.
    assert [e.attempts for e in outbox(app)] == [3, 3, 3]


def test_after_the_last_attempt_an_email_fails_and_can_be_retried(
    app: Flask, api: Api, smtp_server: SmtpSink
) -> None:
    book_many(api, 1)
    smtp_server.stop()
    moment = utcnow()
    for _ in range(4):  # mail_max_attempts
        deliver(app, moment)
        moment += timedelta(hours=7)
    [row] = outbox(app)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 4, None)
    assert deliver(app, moment + timedelta(days=1)).failed_attempts == 0  # given up: left alone
    smtp_server.start()
    resp = api.post(f"/emails/{row.id}/retry")
    assert resp.status_code == 200 and resp.get_json()["status"] == "pending"
    assert deliver(app).sent == 1
    assert len(smtp_server.messages) == 1


def test_backoff_doubles_up_to_six_hours() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert retry_delay(30) == timedelta(hours=6)


def test_a_refused_message_fails_at_once(app: Flask, api: Api, smtp_server: SmtpSink) -> None:
    book_many(api, 1)
    smtp_server.refuse = "554 5.7.1 Message rejected as spam"
    report = deliver(app)
    assert (report.failed_attempts, report.gave_up) == (1, 1)
    [row] = outbox(app)
    assert row.status == "failed" and row.attempts == 1
    assert "554" in (row.last_error or "") and "refused the email" in (row.last_error or "")


def test_a_temporary_refusal_is_retried(app: Flask, api: Api, smtp_server: SmtpSink) -> None:
    book_many(api, 1)
    smtp_server.refuse = "451 4.3.0 Try again later"
    deliver(app)
    [row] = outbox(app)
    assert (row.status, row.attempts) == ("pending", 1) and "451" in (row.last_error or "")


def test_two_workers_never_send_the_same_email(app: Flask, api: Api, smtp_server: SmtpSink) -> None:
    book_many(api, 24)
    ctx = mail_context(app)
    start = threading.Barrier(3)
    reports = []

    def worker() -> None:
        start.wait()
        reports.append(deliver_due(ctx))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.sent for r in reports) == 24
    counts = smtp_server.by_message_id()
    assert len(counts) == 24 and set(counts.values()) == {1}


def test_a_leased_email_is_not_taken_by_another_worker(app: Flask, api: Api) -> None:
    book_many(api, 1)
    [row] = outbox(app)
    ctx = mail_context(app)
    now = utcnow()
    assert _lease(ctx, row.id, now) is not None
    assert _lease(ctx, row.id, now) is None
    # A worker that died keeps it only until the lease runs out.
    assert _lease(ctx, row.id, now + timedelta(seconds=ctx.lease_seconds + 1)) is not None


def test_starttls_is_required_when_asked_for(app: Flask, api: Api, settings: Settings) -> None:
    server = SmtpSink(auth=("mailer", SECRET))  # offers AUTH in plain text, but no STARTTLS
    server.start()
    try:
        from calsync.web import create_app

        url = f"smtp://mailer:{quote(SECRET, safe='')}@{server.host}:{server.port}?starttls=1"
        tls_app = create_app(with_mail(settings, smtp_url=url))
        book_many(api, 1)
        deliver_due(tls_app.extensions["calsync"].mail)
        tls_app.extensions["calsync"].engine.dispose()
    finally:
        server.stop()
    assert server.logins == [] and server.messages == []
    [row] = outbox(app)
    assert "does not offer STARTTLS" in (row.last_error or "")


# --- the password stays secret -----------------------------------------------------------------


@pytest.fixture
def auth_server() -> Iterator[SmtpSink]:
    server = SmtpSink(auth=("mailer", SECRET))
    server.start()
    yield server
    server.stop()


def test_the_smtp_password_is_never_logged_nor_shown(
    app: Flask, api: Api, settings: Settings, auth_server: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    from calsync.web import create_app

    caplog.set_level(logging.DEBUG)
    base = f"smtp://mailer:{{}}@{auth_server.host}:{auth_server.port}"
    wrong = create_app(with_mail(settings, smtp_url=base.format(quote("not-" + SECRET, safe=""))))
    right = create_app(with_mail(settings, smtp_url=base.format(quote(SECRET, safe=""))))
    try:
        book_many(api, 1)
        deliver_due(wrong.extensions["calsync"].mail)
        [row] = outbox(app)
        assert "refused the login of 'mailer'" in (row.last_error or "")
        listing = api.get("/emails").get_data(as_text=True)
        assert deliver_due(right.extensions["calsync"].mail, now=utcnow() + timedelta(minutes=2)).sent == 1
    finally:
        wrong.extensions["calsync"].engine.dispose()
        right.extensions["calsync"].engine.dispose()
    assert auth_server.logins[-1] == ("mailer", SECRET)  # decoded from the URL
    assert len(auth_server.messages) == 1
    listing += api.get("/emails").get_data(as_text=True)
    # Everything calsync logged (the test server's own "mail.log" traces the AUTH exchange).
    ours = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records
                     if not r.name.startswith("mail."))
    for secret in (SECRET, quote(SECRET, safe=""), "not-" + SECRET):
        assert secret not in ours
        assert secret not in listing
    assert "refused the login" in ours  # the failure itself is logged


# --- the queue ---------------------------------------------------------------------------------


@pytest.fixture
def consumer(app: Flask) -> Iterator[object]:
    worker = app.extensions["calsync"].jobs.start_in_background(workers=2, periodic=False)
    yield worker
    worker.stop(graceful=True)


def test_the_queue_delivers_right_after_the_commit(
    app: Flask, api: Api, smtp_server: SmtpSink, consumer: object
) -> None:
    book_many(api, 2)
    wait_until(lambda: len(smtp_server.messages) == 2, lambda: f"two emails; outbox: {outbox(app)}")
    wait_until(lambda: all(e.status == "sent" for e in outbox(app)), "every email marked sent")
    parse_imip(smtp_server.messages[0].data)


def test_a_lost_enqueue_only_waits_for_the_schedule(
    app: Flask, api: Api, smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = app.extensions["calsync"].jobs

    def broken() -> None:
        raise ConnectionError("queue unavailable")

    monkeypatch.setattr(jobs, "enqueue_delivery", broken)
    book_many(api, 1)  # still booked: the queue being down never fails a change
    assert [e.status for e in outbox(app)] == ["pending"]
    queued: list[datetime] = []
    monkeypatch.setattr(jobs, "deliver_task", lambda: queued.append(utcnow()))
    jobs._schedule_due()  # what the periodic task does every minute
    assert len(queued) == 1
    jobs._deliver()
    assert len(smtp_server.messages) == 1
    jobs._schedule_due()
    assert len(queued) == 1  # nothing due any more
