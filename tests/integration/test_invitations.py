"""Staff invitations ("Invite to sync"): the editable email with its placeholders, the preview,
sending through the outbox to a real SMTP server, the connect link that records "opened" and
"used", re-send and revoke (feeds/invitations.py, web/admin/invitations.py)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.errors import ValidationError
from calsync.feeds.mail.outbox import readable_message
from calsync.feeds.onboarding.connect_links import (
    LINK_DAYS,
    ConnectLinkError,
    connect_sealer,
    make_connect_token,
    read_connect_link,
)
from calsync.feeds.onboarding.invitation_text import (
    DEFAULT_BODY,
    DEFAULT_SUBJECT,
    check_draft,
    fill_html,
    fill_text,
    parse_template,
)
from calsync.feeds.onboarding.invitations import InviteKeys, send_invitation
from calsync.feeds.settings import Settings
from calsync.models import AdminUser, Company, FeedToken, Invitation, OutboxEmail, Staff, utcnow
from tests.admin_helpers import ADMIN_PASSWORD, Browser, busy_ics, text_of
from tests.conftest import Api
from tests.mail_helpers import deliver, outbox, parse_message, with_mail
from tests.servers import CalendarHTTPServer, SmtpSink

BASE = "https://cal.example.test"
CONNECT = re.compile(re.escape(BASE) + r"(/connect/[A-Za-z0-9_=-]+)")


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpSink) -> Settings:
    return with_mail(
        settings, allow_private_networks=True, smtp_url=smtp_server.url, mail_from="team@salon.example"
    )


@pytest.fixture
def zoe(api: Api) -> dict[str, Any]:
    return api.make_staff()


@pytest.fixture
def ana(api: Api) -> dict[str, Any]:
    return api.make_staff(name="Ana Ortega", email="ana@example.com")


def invitations(app: Flask) -> list[Invitation]:
    with app.extensions["calsync"].sessions() as session:
        return list(session.scalars(select(Invitation).order_by(Invitation.id)))


def send(admin: Browser, staff_id: int, **fields: str) -> Any:
    form = {"to": "zoe@example.com", "subject": DEFAULT_SUBJECT, "body": DEFAULT_BODY, **fields}
    return admin.post(f"/staff/{staff_id}/invite", form, page=f"/staff/{staff_id}/invite")


def preview(admin: Browser, staff_id: int, **fields: str) -> Any:
    form = {"to": "zoe@example.com", "subject": DEFAULT_SUBJECT, "body": DEFAULT_BODY, **fields}
    return admin.post(f"/staff/{staff_id}/invite/preview", form, page=f"/staff/{staff_id}/invite")


def received(app: Flask, smtp: SmtpSink, to: str = "zoe@example.com") -> list[Any]:
    deliver(app)
    return [parse_message(m.data) for m in smtp.messages if m.rcpt_tos == [to]]


def parts(message: Any) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in message.iter_parts()]
    assert types == ["text/plain", "text/html"]
    return (
        message.get_body(preferencelist=("plain",)).get_content(),
        message.get_body(preferencelist=("html",)).get_content(),
    )


def connect_path(text: str) -> str:
    found = CONNECT.search(text)
    assert found, "the email has no connect link"
    return found.group(1)


class Links(HTMLParser):
    """Every href of an HTML document, entities decoded as a mail client would."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v for k, v in attrs if tag == "a" and k == "href" and v]


def staff_feed_token(app: Flask, staff_id: int) -> tuple[FeedToken, str]:
    services = app.extensions["calsync"]
    with services.sessions() as session:
        row = session.scalars(
            select(FeedToken).where(FeedToken.scope == "staff", FeedToken.scope_id == staff_id)
        ).one()
        plain = services.sealer.open(row.token_encrypted)
        assert plain
        return row, plain


# --- the template -----------------------------------------------------------------------------


def test_placeholders_fill_plain_text_and_escaped_html() -> None:
    parts_ = parse_template("Hi { staff_name }, {{literal}} at {company}: {feed_url}", "message", "body")
    values = {"staff_name": 'Zoë <b>&</b> "Q"', "company": "A & B", "feed_url": "https://x.test/f?a=1&b=2"}
    assert fill_text(parts_, values) == 'Hi Zoë <b>&</b> "Q", {literal} at A & B: https://x.test/f?a=1&b=2'
    html = str(fill_html(parts_, values))
    assert html == (
        '<p style="margin:0 0 14px;">Hi Zoë &lt;b&gt;&amp;&lt;/b&gt; &#34;Q&#34;, {literal} at '
        'A &amp; B: <a href="https://x.test/f?a=1&amp;b=2" style="word-break:break-all;">https://x.test/f?a=1&amp;b=2</a></p>'
    )
    two = fill_html(parse_template("<i>one</i>\nline\n\n  \npara {company}", "message", "body"), values)
    assert str(two) == (
        '<p style="margin:0 0 14px;">&lt;i&gt;one&lt;/i&gt;<br>\nline</p>\n'
        '<p style="margin:0 0 14px;">para A &amp; B</p>'
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Hello {name}", "{name}"),
        ("{staff_name!r} and {0} and {}", "{staff_name!r}, {0}, {}"),
        ("{company.name}", "{company.name}"),
        ("{feed} {feed}", "{feed}"),
    ],
)
def test_unknown_placeholders_are_named(text: str, named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_template(text, "message", "body")
    assert f"The message uses {named}, which calsync does not know" in str(caught.value)
    assert "{staff_name}" in str(caught.value) and caught.value.field == "body"


@pytest.mark.parametrize(
    ("text", "brace"), [("Hello {staff_name", "{"), ("a } b", "}"), ("x {company}}", "}")]
)
def test_a_brace_without_its_partner_is_a_sentence(text: str, brace: str) -> None:
    with pytest.raises(ValidationError, match=f"has a “{re.escape(brace)}” without its partner"):
        parse_template(text, "subject", "subject")


@pytest.mark.parametrize(
    ("to", "subject", "body", "field", "says"),
    [
        ("", "s", "b", "to", "Enter the email address"),
        ("zoe@example.com, eve@example.com", "s", "b", "to", "is not a single email address"),
        ("zoe@example.com\r\nBcc: eve@example.com", "s", "b", "to", "is not a single email address"),
        ("zoe@example.com", " ", "b", "subject", "Write a subject"),
        ("zoe@example.com", "s" * 201, "b", "subject", "at most 200"),
        ("zoe@example.com", "s", "\n \n", "body", "Write a message"),
        ("zoe@example.com", "s", "b" * 10_001, "body", "at most 10000"),
    ],
)
def test_the_draft_is_checked(to: str, subject: str, body: str, field: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as caught:
        check_draft(to, subject, body)
    assert caught.value.field == field


# --- the form and the preview -----------------------------------------------------------------


def test_the_staff_page_offers_the_invitation(admin: Browser, zoe: dict[str, Any]) -> None:
    html = text_of(admin.get(f"/staff/{zoe['id']}"))
    assert f'href="/staff/{zoe["id"]}/invite">Invite to sync</a>' in html
    assert "No invitation sent yet" in html


def test_the_form_is_prefilled(admin: Browser, zoe: dict[str, Any]) -> None:
    resp = admin.get(f"/staff/{zoe['id']}/invite")
    html = text_of(resp)
    assert resp.status_code == 200
    assert 'name="to" type="email" required maxlength="320" value="zoe@example.com"' in html
    assert 'value="{company}: your bookings in your own calendar"' in html
    assert "Hello {staff_name}," in html and "{connect_url}" in html
    assert 'name="csrf_token"' in html and ">Preview</button>" in html and ">Send invitation</button>" in html
    assert "no email address on file" not in html


def test_preview_renders_the_email_and_sends_nothing(app: Flask, admin: Browser, zoe: dict[str, Any]) -> None:
    resp = preview(
        admin,
        zoe["id"],
        subject="Calendar for {staff_name} at {company}",
        body="Hi {staff_name}\n\nSubscribe: {webcal_url}\nYour page: {connect_url}",
    )
    html = text_of(resp)
    assert resp.status_code == 200
    assert '<dd data-field="preview-subject">Calendar for Zoë Müller at Test Salon</dd>' in html
    _row, token = staff_feed_token(app, zoe["id"])
    srcdoc = re.search(r'<iframe [^>]*sandbox="" srcdoc="([^"]*)"', html)
    assert srcdoc, "the preview is a sandboxed iframe"
    email_html = (
        srcdoc.group(1)
        .replace("&#34;", '"')
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )
    link = f'<a href="webcal://cal.example.test/feeds/{token}.ics" style="word-break:break-all;">'
    assert link in email_html
    assert "/connect/personal-link-created-when-sent" in email_html  # no real link made
    assert "Google decides when to look again" in email_html
    assert "every 3 hours" in html and f"Subscribe: webcal://cal.example.test/feeds/{token}.ics" in html
    # The page's CSP allows exactly the email's inline styles, by hash, and nothing else inline.
    csp = resp.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp
    styles = set(re.findall(r'style="([^"]*)"', email_html))
    assert styles
    for style in styles:
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert invitations(app) == [] and outbox(app) == []
    with app.extensions["calsync"].sessions() as session:
        assert session.get(Staff, zoe["id"]).connect_nonce is None  # type: ignore[union-attr]


@pytest.mark.parametrize("action", [preview, send])
def test_placeholder_errors_are_sentences_in_the_form(
    app: Flask, admin: Browser, zoe: dict[str, Any], action: Any
) -> None:
    resp = action(admin, zoe["id"], subject="Hi {name}", body="Dear {staff_name}, {{ok}} {connect}")
    html = text_of(resp)
    assert resp.status_code == 422
    assert "The subject uses {name}, which calsync does not know" in html
    assert 'value="Hi {name}"' in html and "{connect}" in html  # what was typed stays
    assert 'aria-invalid="true" aria-describedby="subject-error"' in html
    resp = action(admin, zoe["id"], body="Dear {staff_name")
    assert resp.status_code == 422 and "without its partner" in text_of(resp)
    assert invitations(app) == [] and outbox(app) == []


def test_a_staff_member_without_an_email_address(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    with app.extensions["calsync"].sessions.begin() as session:
        session.get(Staff, zoe["id"]).email = ""  # type: ignore[union-attr]
    html = text_of(admin.get(f"/staff/{zoe['id']}/invite"))
    assert "Zoë Müller has no email address on file. Enter the address" in html
    assert 'type="email" required maxlength="320" value=""' in html
    resp = send(admin, zoe["id"], to="")
    assert resp.status_code == 422 and "Enter the email address to send the invitation to." in text_of(resp)
    assert invitations(app) == []
    assert send(admin, zoe["id"], to="zoe.private@example.org").status_code == 302
    [inv] = invitations(app)
    assert inv.email == "zoe.private@example.org"
    assert len(received(app, smtp_server, "zoe.private@example.org")) == 1
    html = text_of(admin.get(f"/staff/{zoe['id']}/invite"))
    assert "the last one went to zoe.private@example.org" in html


def test_no_feed_link_to_send_is_a_sentence(app: Flask, admin: Browser, zoe: dict[str, Any]) -> None:
    row, _token = staff_feed_token(app, zoe["id"])
    admin.post(f"/tokens/{row.id}/revoke")
    for action in (preview, send):
        resp = action(admin, zoe["id"])
        assert resp.status_code == 422
        assert "Zoë Müller has no feed link to send. Create a link under Calendar sync" in text_of(resp)
    # The failed send wrote nothing: the invitation row went with the rolled-back transaction.
    assert invitations(app) == [] and outbox(app) == []


# --- sending ----------------------------------------------------------------------------------


def test_the_stored_email_holds_no_link_before_or_after_delivery(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    """The outbox kept invitations in plain text: a database copy gave every connect link and
    feed URL. Now the message is sealed with the credentials vault until it is sent, and its
    body is dropped once it is."""
    send(admin, zoe["id"], subject="{staff_name}, your page: {connect_url}")
    _row, token = staff_feed_token(app, zoe["id"])
    [stored] = outbox(app)
    assert stored.message_sealed and stored.status == "pending"
    for secret in (token.encode(), b"/connect/", b"/feeds/", b"Subject:"):
        assert secret not in stored.message
    assert stored.subject == "Zoë Müller, your page: [link]"
    [message] = received(app, smtp_server)
    text, _html = parts(message)
    path = connect_path(text)
    assert token in text
    assert str(message["Subject"]).startswith("Zoë Müller, your page: https://cal.example.test/connect/")
    [sent] = outbox(app)
    assert sent.status == "sent" and not sent.message_sealed
    kept = parse_message(sent.message)
    for secret in (token, path[len("/connect/"):][:40], "/connect/", "/feeds/"):
        assert secret not in sent.message.decode("ascii")
    assert kept["Message-ID"] == message["Message-ID"] and kept["To"] == message["To"]
    assert "removed once the email was delivered" in kept.get_content()
    # The link itself still works: only the stored copy is gone.
    assert app.test_client().get(path).status_code == 302


def test_send_queues_the_email_with_its_invitation_and_it_arrives(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    resp = send(admin, zoe["id"], subject="{staff_name}: your calendar at {company}")
    assert resp.status_code == 302 and resp.headers["Location"] == f"/staff/{zoe['id']}#invitations"
    [inv] = invitations(app)
    [email] = outbox(app)
    with app.extensions["calsync"].sessions() as session:
        admin_id = session.scalars(select(AdminUser.id)).one()
    assert (inv.outbox_email_id, inv.created_by, inv.email) == (email.id, admin_id, "zoe@example.com")
    assert inv.subject == "{staff_name}: your calendar at {company}" and inv.body == DEFAULT_BODY
    assert inv.expires_at - inv.sent_at == timedelta(days=LINK_DAYS)
    assert (inv.opened_at, inv.used_at, inv.revoked_at) == (None, None, None)
    assert (email.kind, email.status, email.to_address) == ("invitation", "pending", "zoe@example.com")
    assert email.dedupe_key == f"invitation:{inv.id}"
    page = text_of(admin.get(f"/staff/{zoe['id']}"))
    assert "Invitation to zoe@example.com written to the outbox" in page and "Waiting in the outbox" in page

    [message] = received(app, smtp_server)
    assert str(message["Subject"]) == "Zoë Müller: your calendar at Test Salon"
    assert str(message["To"]) == "Zoë Müller <zoe@example.com>"
    assert str(message["From"]) == "Test Salon <team@salon.example>"
    text, html = parts(message)
    _row, token = staff_feed_token(app, zoe["id"])
    feed = f"{BASE}/feeds/{token}.ics"
    webcal = f"webcal://cal.example.test/feeds/{token}.ics"
    google = (
        "https://calendar.google.com/calendar/render?cid=webcal%3A%2F%2Fcal.example.test%2Ffeeds%2F" + token
    )
    outlook = (
        "https://outlook.live.com/calendar/0/addfromweb?url=https%3A%2F%2Fcal.example.test%2Ffeeds%2F" + token
    )
    office = (
        "https://outlook.office.com/calendar/0/addfromweb?url=https%3A%2F%2Fcal.example.test%2Ffeeds%2F"
        + token
    )
    path = connect_path(text)
    for url in (feed, webcal, google, outlook, office, BASE + path):
        assert url in text
    for url in (outlook, office):  # Outlook names the calendar after the feed (issue 13)
        assert url + ".ics&name=Zo%C3%AB%20M%C3%BCller" in text
    hrefs = Links(html).hrefs
    assert {feed, webcal, BASE + path} <= set(hrefs)
    for prefix in (google, outlook, office):
        assert any(h.startswith(prefix) for h in hrefs), prefix
    assert hrefs.count(webcal) >= 2  # Apple Calendar and Thunderbird
    for app_name in ("Apple Calendar", "Google Calendar", "Outlook.com", "Microsoft 365", "Thunderbird"):
        assert app_name in text and app_name in html
    # The honest refresh lines, in both parts.
    for words in (
        "Auto-refresh",
        "every several hours",
        "once a day",
        "about every 3 hours",
        "every 30 minutes unless changed",
        "every 60 minutes",
    ):
        assert words in " ".join(text.split()) and words in html
    assert "Hello Zoë Müller," in text and '<p style="margin:0 0 14px;">Hello Zoë Müller,<br>' not in html
    assert "Hello Zoë Müller,</p>" in html
    deliver(app)
    assert len(received(app, smtp_server)) == 1  # sent once, not again
    page = text_of(admin.get(f"/staff/{zoe['id']}"))
    assert ">Delivered</span>" in page and "Not opened yet" in page


def test_names_are_plain_in_the_text_part_and_escaped_in_the_html_part(
    app: Flask, api: Api, admin: Browser, smtp_server: SmtpSink
) -> None:
    odd = api.make_staff(name='Zoë <b>"Bold"</b> & Co', email="odd@example.com")
    send(admin, odd["id"], to="odd@example.com", body="Hi {staff_name}, <script>x()</script>")
    [message] = received(app, smtp_server, "odd@example.com")
    text, html = parts(message)
    assert 'Hi Zoë <b>"Bold"</b> & Co, <script>x()</script>' in text
    assert "Hi Zoë &lt;b&gt;&#34;Bold&#34;&lt;/b&gt; &amp; Co, &lt;script&gt;x()&lt;/script&gt;" in html
    assert "<script>" not in html and "<b>" not in html


def test_the_invitation_and_its_email_share_one_transaction(app: Flask, zoe: dict[str, Any]) -> None:
    services = app.extensions["calsync"]
    keys = InviteKeys(BASE, services.sealer, connect_sealer(services.settings.secret_key))
    with services.sessions() as session:
        company = session.scalars(select(Company)).one()
        staff = session.get(Staff, zoe["id"])
        assert staff is not None
        inv = send_invitation(session, company, staff, check_draft("zoe@example.com", "s", "b"), keys)
        assert inv.id and inv.outbox_email_id
        session.rollback()  # the caller's transaction fails after the call
    assert invitations(app) == [] and outbox(app) == []


# --- the link: opened, used, re-sent, revoked -------------------------------------------------


def open_link(app: Flask, path: str) -> Browser:
    client = app.test_client()
    resp = client.get(path)
    assert resp.status_code == 302 and resp.headers["Location"] == "/connect/", text_of(resp)
    return Browser(client)


def test_opening_the_link_and_connecting_a_calendar_are_recorded(
    app: Flask,
    admin: Browser,
    zoe: dict[str, Any],
    smtp_server: SmtpSink,
    calendar_http: CalendarHTTPServer,
) -> None:
    send(admin, zoe["id"])
    [message] = received(app, smtp_server)
    path = connect_path(parts(message)[0])
    visitor = open_link(app, path)
    [inv] = invitations(app)
    assert inv.opened_at is not None and inv.used_at is None
    first_open = inv.opened_at
    open_link(app, path)  # a second visit keeps the first time
    assert invitations(app)[0].opened_at == first_open
    html = text_of(visitor.get("/connect/"))
    assert "Hello, Zoë Müller" in html and "How often each app updates" in html
    resp = visitor.post(
        "/connect/calendars/ics",
        {"url": calendar_http.add("/zoe.ics", busy_ics(2)), "name": "Private"},
        page="/connect/",
    )
    assert resp.status_code == 302
    [inv] = invitations(app)
    assert inv.used_at is not None and inv.opened_at == first_open
    page = text_of(admin.get(f"/staff/{zoe['id']}"))
    assert "Opened <time" in page and "Calendar connected <time" in page


def test_a_link_made_without_an_invitation_records_nothing(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    send(admin, zoe["id"])
    html = text_of(admin.post(f"/staff/{zoe['id']}/connect-link", page=f"/staff/{zoe['id']}"))
    link = re.search(r'id="connect-link-url" readonly value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    open_link(app, link.removeprefix(BASE))
    assert invitations(app)[0].opened_at is None


def test_resend_is_a_new_invitation_with_a_new_link(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    send(admin, zoe["id"], subject="First {staff_name}")
    [first] = invitations(app)
    resp = admin.post(f"/invitations/{first.id}/resend", page=f"/staff/{zoe['id']}")
    assert resp.headers["Location"] == f"/staff/{zoe['id']}#invitations"
    assert "New invitation with a new link to zoe@example.com" in text_of(admin.get(f"/staff/{zoe['id']}"))
    old, new = invitations(app)
    assert (new.email, new.subject, new.body) == (old.email, old.subject, old.body)
    assert new.outbox_email_id != old.outbox_email_id and new.revoked_at is None
    one, two = received(app, smtp_server)
    assert str(one["Subject"]) == str(two["Subject"]) == "First Zoë Müller"
    first_path, second_path = connect_path(parts(one)[0]), connect_path(parts(two)[0])
    assert first_path != second_path
    open_link(app, second_path)
    open_link(app, first_path)  # the earlier link keeps working
    assert all(inv.opened_at for inv in invitations(app))


def test_revoking_refuses_that_link_only(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    send(admin, zoe["id"])
    send(admin, zoe["id"])
    first, second = invitations(app)
    mail_one, mail_two = received(app, smtp_server)
    revoked_path, kept_path = connect_path(parts(mail_one)[0]), connect_path(parts(mail_two)[0])
    visitor = open_link(app, revoked_path)
    assert visitor.get("/connect/").status_code == 200
    resp = admin.post(f"/invitations/{first.id}/revoke", page=f"/staff/{zoe['id']}")
    assert resp.headers["Location"] == f"/staff/{zoe['id']}#invitations"
    resp = visitor.get("/connect/")  # the open page ends at its next request
    assert resp.status_code == 403 and "This invitation was withdrawn" in text_of(resp)
    resp = app.test_client().get(revoked_path)
    assert resp.status_code == 403 and "withdrawn" in text_of(resp)
    open_link(app, kept_path)
    page = text_of(admin.get(f"/staff/{zoe['id']}"))
    assert page.index(f'id="invitation-{second.id}"') < page.index(f'id="invitation-{first.id}"')
    row = page[page.index(f'id="invitation-{first.id}"') :]  # newest first: the older is last
    assert ">Revoked</span>" in row and f"/invitations/{first.id}/revoke" not in page
    assert f"/invitations/{second.id}/revoke" in page and f"/invitations/{first.id}/resend" in page
    assert invitations(app)[0].revoked_at is not None and invitations(app)[1].revoked_at is None


def test_revoke_all_links_revokes_the_invitations_too(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    send(admin, zoe["id"])
    path = connect_path(parts(received(app, smtp_server)[0])[0])
    admin.post(f"/staff/{zoe['id']}/connect-link/revoke", page=f"/staff/{zoe['id']}")
    assert app.test_client().get(path).status_code == 403
    [inv] = invitations(app)
    assert inv.revoked_at is not None
    # A new invitation after that works: its link carries the new nonce.
    send(admin, zoe["id"])
    open_link(app, connect_path(parts(received(app, smtp_server)[-1])[0]))


def test_an_expired_invitation(app: Flask, admin: Browser, zoe: dict[str, Any]) -> None:
    services = app.extensions["calsync"]
    keys = InviteKeys(BASE, services.sealer, connect_sealer(services.settings.secret_key))
    with services.sessions.begin() as session:
        company = session.scalars(select(Company)).one()
        staff = session.get(Staff, zoe["id"])
        assert staff is not None
        old = send_invitation(
            session,
            company,
            staff,
            check_draft("zoe@example.com", "s", "{connect_url}"),
            keys,
            now=utcnow() - timedelta(days=LINK_DAYS, minutes=5),
        )
        row = session.get(OutboxEmail, old.outbox_email_id)
        assert row is not None and row.message_sealed  # it carries the link: stored sealed
        message = readable_message(session, row)
    path = connect_path(parts(parse_message(message))[0])
    resp = app.test_client().get(path)
    assert resp.status_code == 403 and "expired" in text_of(resp)
    page = text_of(admin.get(f"/staff/{zoe['id']}"))
    assert ">Expired</span>" in page and f"/invitations/{old.id}/revoke" not in page


def test_a_link_cannot_borrow_another_staff_members_invitation(
    app: Flask, admin: Browser, zoe: dict[str, Any], ana: dict[str, Any]
) -> None:
    send(admin, ana["id"], to="ana@example.com")
    [anas] = invitations(app)
    services = app.extensions["calsync"]
    sealer = connect_sealer(services.settings.secret_key)
    with services.sessions.begin() as session:
        staff = session.get(Staff, zoe["id"])
        assert staff is not None
        token = make_connect_token(session, staff, sealer, invitation_id=anas.id)
        with pytest.raises(ConnectLinkError, match="not valid"):
            read_connect_link(session, sealer, token)
        missing = make_connect_token(session, staff, sealer, invitation_id=anas.id + 100)
        with pytest.raises(ConnectLinkError, match="not valid"):
            read_connect_link(session, sealer, missing)
        plain = make_connect_token(session, staff, sealer)
        assert read_connect_link(session, sealer, plain).invitation_id is None


# --- who may do what --------------------------------------------------------------------------


def test_the_staff_link_reaches_neither_admin_pages_nor_other_staff(
    app: Flask, admin: Browser, zoe: dict[str, Any], ana: dict[str, Any], smtp_server: SmtpSink
) -> None:
    send(admin, zoe["id"])
    send(admin, ana["id"], to="ana@example.com")
    zoes, anas = invitations(app)
    visitor = open_link(app, connect_path(parts(received(app, smtp_server)[0])[0]))
    for path in (f"/staff/{zoe['id']}/invite", f"/staff/{ana['id']}", f"/staff/{ana['id']}/invite"):
        resp = visitor.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login"), path
    token = visitor.token("/connect/")
    for path in (
        f"/staff/{zoe['id']}/invite",
        f"/staff/{zoe['id']}/invite/preview",
        f"/invitations/{anas.id}/resend",
        f"/invitations/{anas.id}/revoke",
        f"/invitations/{zoes.id}/revoke",
    ):
        resp = visitor.client.post(
            path, data={"csrf_token": token, "to": "eve@example.com", "subject": "s", "body": "b"}
        )
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login"), path
    html = text_of(visitor.get("/connect/"))
    assert "Ana" not in html and "ana@example.com" not in html
    assert [inv.revoked_at for inv in invitations(app)] == [None, None] and len(invitations(app)) == 2


@pytest.mark.parametrize(
    "path",
    ["/staff/{s}/invite", "/staff/{s}/invite/preview", "/invitations/{i}/resend", "/invitations/{i}/revoke"],
)
def test_forms_without_csrf_token_are_refused(
    app: Flask, admin: Browser, zoe: dict[str, Any], path: str
) -> None:
    send(admin, zoe["id"])
    [inv] = invitations(app)
    resp = admin.client.post(
        path.format(s=zoe["id"], i=inv.id), data={"to": "eve@example.com", "subject": "s", "body": "b"}
    )
    assert resp.status_code == 400 and "Please try again" in text_of(resp)
    [same] = invitations(app)
    assert same.revoked_at is None and len(outbox(app)) == 1


def test_unknown_invitations_are_404(admin: Browser, zoe: dict[str, Any]) -> None:
    assert admin.post("/invitations/999/resend").status_code == 404
    assert admin.post("/invitations/999/revoke").status_code == 404
    assert admin.get("/staff/999/invite").status_code == 404


def test_no_secret_is_shown_on_the_admin_pages(
    app: Flask, admin: Browser, zoe: dict[str, Any], smtp_server: SmtpSink
) -> None:
    send(admin, zoe["id"])
    path = connect_path(parts(received(app, smtp_server)[0])[0])
    row, _token = staff_feed_token(app, zoe["id"])
    with app.extensions["calsync"].sessions() as session:
        nonce = session.get(Staff, zoe["id"]).connect_nonce  # type: ignore[union-attr]
    assert nonce
    pages = [
        text_of(admin.get(f"/staff/{zoe['id']}")),
        text_of(admin.get(f"/staff/{zoe['id']}/invite")),
        text_of(preview(admin, zoe["id"])),
    ]
    for html in pages:
        for secret in (row.token_hash, row.token_encrypted, nonce, path.rsplit("/", 1)[1], ADMIN_PASSWORD):
            assert secret not in html


def test_deleting_the_staff_member_deletes_their_invitations(
    app: Flask, api: Api, admin: Browser, zoe: dict[str, Any], ana: dict[str, Any]
) -> None:
    send(admin, zoe["id"])
    send(admin, ana["id"], to="ana@example.com")
    assert api.delete(f"/staff/{zoe['id']}").status_code == 204
    assert [inv.staff_id for inv in invitations(app)] == [ana["id"]]
    assert len(outbox(app)) == 2  # the emails stay in the outbox, as sent history
