"""The email.mime build of calsync's emails (mime._assemble_legacy) against the EmailMessage
build it replaced for ASCII addresses (mime._assemble): read by Python's parser (policy
default, as receiving code would), both give the same names, addresses, subject, headers,
parts and decoded bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calsync.feeds.mail.mime import CalendarPart, Party, _assemble, build_message, header_text

CALENDAR = (b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nPRODID:-//calsync//calsync itip 1.0//EN\r\n"
            + b"DESCRIPTION:" + "Färben mit Zoë ".encode() * 20 + b"\r\nEND:VCALENDAR\r\n")
TEXT = "Hallo Jürgen,\n\nyour appointment was moved.\r\nLine " + "x" * 120 + "\n= sign and trailing  \n"
HTML = "<p>Hallo J&uuml;rgen</p>\n<p>" + "Zoë " * 40 + "</p>"
DATE = datetime(2030, 1, 7, 9, 30, 12, 345678, tzinfo=UTC)
MSGID = "<179659141903.19937.16559912989744923131.calsync@salon.example>"

NAMES = [
    "Chloé Lefèvre", "Bench Salon Sommer & Söhne", "Smith, John", "Dr. Müller", "O'Brien, Seán",
    "Eve Bcc: victim@example.org X-Injected: yes ATTENDEE:mailto:victim@example.org, and more words",
    '"Quoted" and \\back\\slashes <angle@brackets.example>', ("Zoë-Ŝtéphanie 山田 花子 🎉 " * 8).strip(),
    "a" * 300, "\r\n\t", "=?utf-8?q?Bcc=3A_victim=40example=2Eorg?=", "", "Test Salon", "Dmitri Иванов",
    "Anna-Lena Schröder-Weiß", "Ingrid Ærø", "x " * 60, "日本 太郎", "  spaced   out  ", "ä" * 100,
    "Eve <eve@evil.example>", "Mallory (admin)", "semi; colon", "A.B.", "Tom \u2028 Jerry\u202e",
]
SUBJECTS = ["Moved: Haircut on Mon 7 Jan 2030, 10:00 CET", "Confirmed: Färben on Di 8 Jan 2030, 11:00 CET",
            "Calendar sync is failing: Zoë's iCloud (Zoë)", *NAMES]


def _parse(data: bytes):  # type: ignore[no-untyped-def]
    return BytesParser(policy=policy.default).parsebytes(data)


def _both(monkeypatch: pytest.MonkeyPatch, sender: Party, recipient: Party, subject: str,
          calendar: CalendarPart | None, date: datetime = DATE) -> tuple[bytes, bytes]:
    """The message from build_message and from EmailMessage, with the same Message-ID."""
    monkeypatch.setattr("calsync.feeds.mail.mime.make_msgid", lambda *a, **k: MSGID)
    new = build_message(sender=sender, recipient=recipient, subject=subject, text=TEXT, html=HTML,
                        date=date, calendar=calendar)
    old = _assemble(sender, recipient, subject, TEXT, HTML, date, calendar, MSGID)
    return new, old


def _squeezed(value: object) -> str:
    return "".join(str(value).split())


def _same_rest(new: bytes, old: bytes) -> None:
    """Every header but From, To and Subject, the parts and their decoded bodies, as before."""
    a, b = _parse(new), _parse(old)
    for field in ("Date", "Message-ID", "Auto-Submitted", "MIME-Version"):
        assert str(a[field]).strip() == str(b[field]).strip(), field
    assert str(a["Message-ID"]) == str(b["Message-ID"]).strip()  # never folded: read back as stored
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    old_parts, new_parts = list(b.iter_parts()), list(a.iter_parts())
    assert [p.get_content_type() for p in new_parts] == [p.get_content_type() for p in old_parts]
    for n, o in zip(new_parts, old_parts, strict=True):
        assert n["Content-Transfer-Encoding"] == o["Content-Transfer-Encoding"]
        assert n.get_payload(decode=True) == o.get_payload(decode=True)
        assert n.get_param("method") == o.get_param("method")
        assert (n.get_content_charset() or "").lower() == (o.get_content_charset() or "").lower()
    assert new.isascii() and b"\r\n" in new and b"\n" not in new.replace(b"\r\n", b"")


def _unfolded(data: bytes, field: str) -> str:
    block = data.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ")
    [line] = [x for x in block.split("\r\n") if x.startswith(field + ":")]
    return line[len(field) + 1:].strip()


def _same_meaning(new: bytes, sender: Party, recipient: Party, subject: str) -> None:
    """From, To and Subject decode to exactly what was meant. Python's parser (policy default)
    puts a space between adjacent encoded words (RFC 2047 §6.2 drops it; the old builder's
    read-back ignored spaces for this reason), so the exact comparison decodes with
    email.header, which follows §6.2."""
    head = _parse(new)
    for field, party in (("From", sender), ("To", recipient)):
        [address] = head[field].addresses
        assert not head[field].defects
        assert address.addr_spec == party.address
        assert "".join(address.display_name.split()) == "".join(party.display_name.split())
        raw = _unfolded(new, field)
        if '"' in raw:  # a quoted-string: no encoded words in it, the parser reads it exactly
            assert address.display_name == party.display_name
        else:
            meant = f"{party.display_name} <{party.address}>" if party.display_name else party.address
            assert str(make_header(decode_header(raw))) == meant
    assert str(make_header(decode_header(_unfolded(new, "Subject")))) == header_text(subject, 200)
    header_block = new.split(b"\r\n\r\n", 1)[0].decode("ascii")
    for line in header_block.split("\r\n"):
        assert len(line) <= 998, line  # RFC 5322 §2.1.1
        for word in re.findall(r"=\?utf-8\?[qb]\?[^?]*\?=", line):
            assert len(word) <= 75  # RFC 2047 §2


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_calendar", [True, False])
def test_email_mime_writes_what_email_message_wrote(monkeypatch: pytest.MonkeyPatch, name: str,
                                                    with_calendar: bool) -> None:
    sender = Party("Bench Salon Sommer & Söhne", "bookings@salon.example")
    recipient = Party(name, "eve@example.com")
    calendar = CalendarPart("REQUEST", CALENDAR) if with_calendar else None
    subject = f"Moved: {name} on Mon 7 Jan 2030"
    new, old = _both(monkeypatch, sender, recipient, subject, calendar)
    _same_rest(new, old)
    _same_meaning(new, sender, recipient, subject)
    assert _squeezed(_parse(new)["Subject"]) == _squeezed(_parse(old)["Subject"])


@pytest.mark.parametrize("subject", SUBJECTS)
def test_subjects_read_back_as_written(monkeypatch: pytest.MonkeyPatch, subject: str) -> None:
    sender, recipient = Party("Test Salon", "bookings@salon.example"), Party("", "eve@example.com")
    new, old = _both(monkeypatch, sender, recipient, subject, None)
    _same_meaning(new, sender, recipient, subject)
    assert _squeezed(_parse(new)["Subject"]) == _squeezed(_parse(old)["Subject"])
    assert _parse(new)["To"].addresses[0].display_name == ""
    assert b"\r\nTo: eve@example.com\r\n" in new  # no name: the bare address, as before


@pytest.mark.parametrize("date", [DATE, DATE.astimezone(timezone(timedelta(hours=-5)))])
@pytest.mark.parametrize("domain", ["salon.example", "a-very-long-subdomain." * 3 + "example",
                                    *("d" * n + ".example" for n in range(48, 54))])
def test_date_message_id_and_cancel_as_before(monkeypatch: pytest.MonkeyPatch, date: datetime,
                                              domain: str) -> None:
    msgid = f"<1.2.3.calsync@{domain}>"
    sender, recipient = Party("Test Salon", f"bookings@{domain}"), Party("Chloé", "c@example.com")
    calendar = CalendarPart("CANCEL", CALENDAR.replace(b"REQUEST", b"CANCEL"))
    monkeypatch.setattr("calsync.feeds.mail.mime.make_msgid", lambda *a, **k: msgid)
    new = build_message(sender=sender, recipient=recipient, subject="s", text="", html="",
                        date=date, calendar=calendar)
    old = _assemble(sender, recipient, "s", "", "", date, calendar, msgid)
    _same_rest(new, old)
    parts = list(_parse(new).iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html", "text/calendar"]
    assert parts[2].get_param("method") == "CANCEL"
    assert parts[2].get_payload(decode=True) == calendar.body


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError):
        build_message(sender=Party("S", "s@example.com"), recipient=Party("R", "r@example.com"),
                      subject="s", text="t", html="h", date=DATE,
                      calendar=CalendarPart('REQUEST"; x="y', CALENDAR))


def test_addresses_beyond_ascii_are_still_built_the_stdlib_way() -> None:
    data = build_message(sender=Party("Test Salon", "bookings@salon.example"),
                         recipient=Party("Jürgen", "juergen@bücher.example"), subject="s", text="t",
                         html="h", date=DATE)
    head = _parse(data)
    assert head["To"].addresses[0].display_name == "Jürgen"
    assert head["To"].addresses[0].domain == "bücher.example"
    assert head["From"].addresses[0].addr_spec == "bookings@salon.example"


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=160), subject=st.text(max_size=260))
def test_any_name_and_subject_read_back(name: str, subject: str) -> None:
    sender, recipient = Party(name, "bookings@salon.example"), Party(name, "eve@example.com")
    data = build_message(sender=sender, recipient=recipient, subject=subject, text="t", html="h",
                         date=DATE)
    _same_meaning(data, sender, recipient, subject)
    assert sorted(_parse(data).keys()) == sorted(["From", "To", "Subject", "Date", "Message-ID",
                                                  "Auto-Submitted", "MIME-Version", "Content-Type"])


# Names build_message does not read back (mime._unquoted): plain ASCII without RFC 5322
# specials, long enough that the address headers fold.
_UNQUOTED = st.text(alphabet=st.sampled_from(
    [chr(c) for c in range(32, 127) if chr(c) not in '()<>[]:;@\\,."']), min_size=0, max_size=160)


@settings(max_examples=300, deadline=None)
@given(name=_UNQUOTED, other=_UNQUOTED)
def test_names_written_as_they_are_read_back_without_being_checked(name: str, other: str) -> None:
    sender, recipient = Party(name, "bookings@salon.example"), Party(other, "eve@example.com")
    data = build_message(sender=sender, recipient=recipient, subject="Moved", text="t", html="h",
                         date=DATE)
    _same_meaning(data, sender, recipient, "Moved")
