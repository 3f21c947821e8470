"""Emails as bytes for the outbox: headers that cannot be injected, bodies rendered from the Jinja
templates in templates/email/, and the iMIP calendar part.

Built with the standard library's `email.mime` classes under the compat32 policy (addresses
beyond ASCII: `email.message.EmailMessage`, policy default); CRLF line ends, only
7-bit content (quoted-printable and base64 parts, RFC 2047 encoded names), so any mail server
takes it as stored whether or not it speaks 8BITMIME or SMTPUTF8.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email import charset as charsets
from email import encoders, policy
from email.errors import HeaderParseError
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesHeaderParser
from email.utils import format_datetime, formataddr, make_msgid
from functools import lru_cache
from typing import Any

import jinja2

from calsync.feeds.errors import CalsyncError

WIRE = policy.default.clone(linesep="\r\n", cte_type="7bit")
# The email.mime classes' policy: headers are written as given (already RFC 2047 encoded by
# formataddr and Header), with none of policy default's header objects, whose parsing and
# refolding of every field was a third of a reschedule PATCH (issue 17).
# Lines of 74: compat32 folds Header values at the policy's length, and email.header's base64
# words overshoot it by up to two; RFC 2047 §2 allows an encoded word 75 characters.
class _LegacyWire(policy.Compat32):
    """compat32, but the Message-ID on the line of its field name: folded onto a line of its
    own it reads back with a leading space, and the id is matched as stored (bounces, the
    delivered copy kept without its body)."""

    def _unfolded(self, name: str, value: Any) -> str | None:
        return f"{name}: {value}{self.linesep}" if name.lower() == "message-id" else None

    def fold(self, name: str, value: Any) -> str:
        return self._unfolded(name, value) or super().fold(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        line = self._unfolded(name, value)
        return line.encode("ascii") if line else super().fold_binary(name, value)


LEGACY_WIRE = _LegacyWire(linesep="\r\n", max_line_length=74)
UTF8_QP = charsets.Charset("utf-8")
UTF8_QP.body_encoding = charsets.QP  # the text and HTML parts stay readable, 7-bit


class UnsafeHeaderError(CalsyncError, ValueError):
    """A header value holds CR or LF: written as is, it would start a header of its own."""


def check_header(value: str) -> str:
    """Refuse CR/LF in a header value (docs/protocol.md; RFC 5322 §2.2: a header ends at CRLF).

    Names and subjects are cleaned with `header_text` before they get here, so this only ever
    fires on a bug: it is the last guard, not the sanitiser.
    """
    if "\r" in value or "\n" in value:
        raise UnsafeHeaderError("An email header may not contain a line break.")
    return value


def one_line(value: str, limit: int = 150) -> str:
    """A name or title as shown in a header or an iCalendar parameter: every control or format
    character (CR, LF, TAB, NUL, U+2028, bidi overrides that disguise a name ...) becomes a
    space, runs of spaces collapse, and it is cut to `limit`."""
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in value)
    return " ".join(text.split())[:limit]


def header_text(value: str, limit: int) -> str:
    """Text for a header (a name, a subject): on one line, and with "=?" broken up, because
    Python's email package decodes RFC 2047 encoded words in the values it is given, so a
    customer named "=?utf-8?q?Bcc=3A_x=40example.org?=" would otherwise be written out as
    the specials it encodes."""
    return one_line(value, limit).replace("=?", "= ?")


def check_address(value: str) -> str:
    """The bare addr-spec of an email address fit for To/From and a mailto: URI (RFC 6047 §2.3).

    Raises ValueError with a sentence (used by the settings validator and before queueing).
    """
    candidate = value.strip()
    if not candidate or any(ch in candidate for ch in "\r\n\t <>,;\"()"):
        raise ValueError("is not a single email address such as calsync@example.com")
    try:
        address = Address(addr_spec=candidate)
    except (ValueError, IndexError, HeaderParseError):
        raise ValueError("is not a single email address such as calsync@example.com") from None
    if not address.username or not address.domain:
        raise ValueError("is not a single email address such as calsync@example.com")
    return address.addr_spec


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        # Package data of calsync (calsync/templates/email), found through importlib.
        loader=jinja2.PackageLoader("calsync", "templates/email"),
        # HTML escaped, plain text not: a customer called "<b>Tom</b>" is shown, never rendered.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    return _templates().get_template(name).render(**context)


SPECIALS = set('()<>[]:;@\\,."')


@dataclass(frozen=True)
class Party:
    name: str
    address: str

    @property
    def display_name(self) -> str:
        return header_text(self.name, 100)

    def checked(self) -> tuple[str, str]:
        """(display name, address), refused if either holds a line break."""
        return check_header(self.display_name), check_header(self.address)

    def header(self) -> Address:
        name, address = self.checked()
        return Address(display_name=name, addr_spec=address)

    def plain(self) -> Party:
        """The same party with a name that needs no quoting: RFC 5322 specials become spaces."""
        return Party(" ".join("".join(" " if ch in SPECIALS else ch for ch in self.name).split()),
                     self.address)


def _unquoted(party: Party) -> bool:
    """A name written as it is (ASCII, no RFC 5322 specials): no quotes to lose in folding and
    no encoded words, so the header reads back as given without parsing it again (which took
    a third of the message's build; issue 17)."""
    name = party.display_name
    return name.isascii() and SPECIALS.isdisjoint(name)


def _addresses_intact(data: bytes, sender: Party, recipient: Party) -> bool:
    """Do From and To read back as exactly the one party each that was meant?

    Names are compared without their spaces: Python's parser puts a space between adjacent
    RFC 2047 encoded words (§6.2 says to drop it), which changes nothing that matters here.
    """
    def squeeze(text: str) -> str:
        return "".join(text.split())

    headers = BytesHeaderParser(policy=policy.default).parsebytes(data)
    for name, party in (("From", sender), ("To", recipient)):
        found = [(squeeze(a.display_name), a.addr_spec) for a in headers[name].addresses]
        if found != [(squeeze(party.display_name), party.address)]:
            return False
    return True


@dataclass(frozen=True)
class CalendarPart:
    method: str  # REQUEST | CANCEL: the same word as the METHOD property inside
    body: bytes

    def __post_init__(self) -> None:
        # A MIME parameter value: an iTIP method is one upper-case word (RFC 5546 §1.4).
        if not (self.method.isascii() and self.method.isalpha() and self.method.isupper()):
            raise ValueError(f"unsupported iTIP method {self.method!r}")


def new_message_id(sender_address: str) -> str:
    """A Message-ID for an email from `sender_address`. It is stored with the email (or its
    draft): a retried delivery repeats it, so receiving systems can tell the duplicate. The
    domain is given: make_msgid would otherwise look up this host's name."""
    return make_msgid("calsync", domain=sender_address.rpartition("@")[2] or "localhost")


def build_message(
    *,
    sender: Party,
    recipient: Party,
    subject: str,
    text: str,
    html: str,
    date: datetime,
    calendar: CalendarPart | None = None,
    message_id: str | None = None,
) -> bytes:
    """multipart/alternative: text, HTML and (for iTIP) text/calendar, least to most
    specific (RFC 2046 §5.1.4), the layout of RFC 6047 §4.2: mail apps that understand
    invitations use the calendar part, the others show the HTML or the text.

    `message_id`: one made before (new_message_id), so building again gives the same bytes."""
    message_id = message_id or new_message_id(sender.address)
    # The email.mime classes when both addresses are ASCII (the common case, several times
    # faster); EmailMessage otherwise, which encodes an internationalised domain.
    assemble = _assemble_legacy if sender.address.isascii() and recipient.address.isascii() else _assemble
    data = assemble(sender, recipient, subject, text, html, date, calendar, message_id)
    if not (_unquoted(sender) and _unquoted(recipient)) and not _addresses_intact(data, sender, recipient):
        # Python's email package (3.11/3.12) drops the quotes around a display name when it
        # folds a long address header, so a customer named 'Eve Bcc: x@example.org' would
        # become a second address. A name without specials cannot be misread.
        sender, recipient = sender.plain(), recipient.plain()
        data = assemble(sender, recipient, subject, text, html, date, calendar, message_id)
        if not _addresses_intact(data, sender, recipient):
            raise UnsafeHeaderError("The email's sender or recipient would not read back as given.")
    return data


def _assemble(sender: Party, recipient: Party, subject: str, text: str, html: str, date: datetime,
              calendar: CalendarPart | None, message_id: str) -> bytes:
    """The message built with EmailMessage: for addresses that are not ASCII, and the reference
    tests/unit/test_mail_build.py compares the email.mime build with."""
    msg = EmailMessage(policy=WIRE)
    msg["From"] = sender.header()
    msg["To"] = recipient.header()
    msg["Subject"] = check_header(header_text(subject, 200))
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    # RFC 3834 §5: tells vacation responders and ticket systems not to answer automatically.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    if calendar is not None:
        # RFC 6047 §2.4: the method parameter must equal the METHOD property. Added as bytes
        # in base64, the iCalendar object keeps its CRLF line ends (RFC 5545 §3.1) exactly.
        msg.add_alternative(calendar.body, maintype="text", subtype="calendar", cte="base64",
                            params={"method": calendar.method, "charset": "UTF-8"})
    msg.set_boundary(_boundary(message_id))
    return msg.as_bytes()


def _boundary(message_id: str) -> str:
    """The multipart boundary, made from the Message-ID rather than at random, so an email
    built again (a draft, feeds/mail/drafts.py) is the same bytes. "=_" cannot occur in a
    quoted-printable or base64 body, the only encodings the parts use (RFC 2045 §6.7, §6.8),
    nor in their headers, so the boundary cannot collide with the content (RFC 2046 §5.1.1)."""
    return "=_calsync_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


def _assemble_legacy(sender: Party, recipient: Party, subject: str, text: str, html: str,
                     date: datetime, calendar: CalendarPart | None, message_id: str) -> bytes:
    """The same message as _assemble, built with the email.mime classes (compat32): names and
    the subject are RFC 2047 encoded by formataddr and Header, bodies quoted-printable and
    base64 as there; build_message reads the addresses back either way."""
    msg = MIMEMultipart("alternative", boundary=_boundary(message_id), policy=LEGACY_WIRE)
    # compat32 takes Header objects as values (typeshed's stubs say str only); so does
    # MIMEText a Charset (its QP body encoding), below.
    for field, party in (("From", sender), ("To", recipient)):
        msg[field] = _mailbox(field, *party.checked())  # type: ignore[assignment]
    msg["Subject"] = _encoded(field="Subject", text=check_header(header_text(subject, 200)))  # type: ignore[assignment]
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    # RFC 3834 §5: tells vacation responders and ticket systems not to answer automatically.
    msg["Auto-Submitted"] = "auto-generated"
    msg.attach(MIMEText(_lines(text), "plain", UTF8_QP, policy=LEGACY_WIRE))  # type: ignore[arg-type]
    msg.attach(MIMEText(_lines(html), "html", UTF8_QP, policy=LEGACY_WIRE))  # type: ignore[arg-type]
    if calendar is not None:
        # RFC 6047 §2.4: the method parameter must equal the METHOD property; base64 keeps the
        # iCalendar object's CRLF line ends (RFC 5545 §3.1) exactly.
        part = MIMEBase("text", "calendar", policy=LEGACY_WIRE, method=calendar.method, charset="UTF-8")
        part.set_payload(calendar.body)
        encoders.encode_base64(part)
        msg.attach(part)
    return msg.as_bytes()


def _encoded(*, field: str, text: str, then: str = "") -> Header:
    """Text as RFC 2047 encoded words where it is not ASCII, each at most 75 characters (§2:
    LEGACY_WIRE's line length)."""
    header = Header(text, "us-ascii" if text.isascii() else "utf-8", header_name=field)
    if then:
        header.append(then, "us-ascii")
    return header


def _mailbox(field: str, name: str, address: str) -> str | Header:
    """`Name <address>`: an ASCII name as it is or quoted (formataddr quotes one with RFC 5322
    specials), any other name as encoded words."""
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))
    return _encoded(field=field, text=name, then=f"<{address}>")


def _lines(text: str) -> str:
    """Line ends made one kind and a final one added, as EmailMessage.set_content does."""
    return "\n".join(text.splitlines()) + "\n"


KEPT_AFTER_DELIVERY = ("From", "To", "Date", "Message-ID", "Auto-Submitted")
BODY_DROPPED = (
    "The body of this email carried secret links (a personal link, a feed address). It was "
    "removed once the email was delivered, so that no copy of the database holds them.\r\n"
)


def without_body(message: bytes, subject: str) -> bytes:
    """What is kept of a delivered email that carried secrets: its addressing headers, the given
    subject (the outbox row's, in which links are already replaced) and a note instead of the
    body; enough for the outbox page and for matching a bounce by its Message-ID."""
    headers = BytesHeaderParser(policy=policy.default).parsebytes(message)
    kept = EmailMessage(policy=WIRE)
    for name in KEPT_AFTER_DELIVERY:
        if headers[name] is not None:
            kept[name] = str(headers[name])
    kept["Subject"] = check_header(header_text(subject, 200))
    kept.set_content(BODY_DROPPED, cte="7bit")
    return kept.as_bytes()
