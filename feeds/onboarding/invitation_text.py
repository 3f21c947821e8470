"""What an invitation email says: the default subject and message, the placeholders and how
they are filled in, and the calendar apps with their one-click links, steps and refresh lines.

`parse_template` checks the admin's text: an unknown or malformed placeholder is a
ValidationError naming it, never a KeyError. Filled in, the values are plain text in the text
part (`fill_text`) and HTML-escaped in the HTML part (`fill_html`, where the addresses become
links). feeds.invitations sends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup, escape

from calsync.feeds.errors import ValidationError
from calsync.feeds.mail.mime import check_address, one_line
from calsync.feeds.publishing import tokens

PLACEHOLDERS = ("company", "staff_name", "feed_url", "webcal_url", "connect_url")
URL_PLACEHOLDERS = frozenset({"feed_url", "webcal_url", "connect_url"})
MAX_SUBJECT = 200
MAX_BODY = 10_000
# What the preview shows for {connect_url}: the real link is made (and only works) once sent.
PREVIEW_CONNECT_TOKEN = "personal-link-created-when-sent"  # noqa: S105 - not a secret

DEFAULT_SUBJECT = "{company}: your bookings in your own calendar"
DEFAULT_BODY = (
    "Hello {staff_name},\n\n"
    "your bookings at {company} are now published as a calendar of your own. Subscribe to it once "
    "from the calendar app you use, and new bookings, moves and cancellations show up there by "
    "themselves. The buttons below do it in one click; this is the address:\n\n"
    "{feed_url}\n\n"
    "So that nobody books you while you are busy elsewhere, please also connect your own calendar "
    "on your personal page. Only the times when you are busy are read, never what your events "
    "are:\n\n"
    "{connect_url}\n\n"
    "Thank you,\n"
    "{company}"
)

Segment = tuple[str, str]  # ("text", literal text) or ("field", placeholder name)
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_KNOWN = ", ".join("{" + name + "}" for name in PLACEHOLDERS[:-1]) + " or {" + PLACEHOLDERS[-1] + "}"


def parse_template(text: str, what: str, field: str) -> list[Segment]:
    """Split a subject or message into literal text and placeholders.

    `{{` and `}}` stand for a brace as such (as in Python's str.format). An unknown name, or a
    brace without its partner, is a ValidationError that names it and says what to write.
    """
    segments: list[Segment] = []
    unknown: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            segments.append(("text", text[pos : match.start()]))
        token = match.group(0)
        pos = match.end()
        if token in ("{{", "}}"):
            segments.append(("text", token[0]))
        elif match.group(1) is not None and match.group(1).strip() in PLACEHOLDERS:
            segments.append(("field", match.group(1).strip()))
        elif match.group(1) is not None:
            unknown.append(one_line(token, 40))
        else:
            near = one_line(text[max(0, match.start() - 15) : match.start() + 15], 40)
            raise ValidationError(
                f"The {what} has a “{token}” without its partner (near “{near}”). Placeholders "
                "look like {staff_name}; write {{ or }} for a brace as such.",
                field,
            )
    if pos < len(text):
        segments.append(("text", text[pos:]))
    if unknown:
        names = ", ".join(dict.fromkeys(unknown))
        raise ValidationError(
            f"The {what} uses {names}, which calsync does not know. The placeholders are {_KNOWN}; "
            "write {{ and }} for a brace as such.",
            field,
        )
    return segments


def fill_text(segments: list[Segment], values: dict[str, str]) -> str:
    return "".join(values[value] if kind == "field" else value for kind, value in segments)


def fill_html(segments: list[Segment], values: dict[str, str]) -> Markup:
    """The message as HTML paragraphs: the admin's text and the names escaped, the addresses
    links. Blank lines separate paragraphs, single line breaks stay line breaks."""
    parts = []
    for kind, value in segments:
        if kind == "text":
            parts.append(str(escape(value)))
        elif value in URL_PLACEHOLDERS:
            link = Markup('<a href="{0}" style="word-break:break-all;">{0}</a>')
            parts.append(str(link.format(values[value])))
        else:
            parts.append(str(escape(values[value])))
    # Line breaks only come from the (escaped) text parts: names pass through one_line.
    html = "".join(parts).replace("\r\n", "\n").strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", html) if p.strip()]
    body = "\n".join('<p style="margin:0 0 14px;">' + p.replace("\n", "<br>\n") + "</p>" for p in paragraphs)
    return Markup(body)  # noqa: S704 - built from escaped pieces only


@dataclass(frozen=True)
class Draft:
    """A checked invitation: the address, and the subject and message as written and parsed."""

    to: str
    subject: str
    body: str
    subject_parts: list[Segment]
    body_parts: list[Segment]


def check_draft(to: str, subject: str, body: str) -> Draft:
    """Validate the form: one address, a subject and a message with known placeholders."""
    to = to.strip()
    if not to:
        raise ValidationError("Enter the email address to send the invitation to.", "to")
    try:
        address = check_address(to)
    except ValueError as exc:
        raise ValidationError(f"“{one_line(to, 80)}” {exc}.", "to") from None
    subject = subject.strip()
    body = body.replace("\r\n", "\n").strip()
    if not subject:
        raise ValidationError("Write a subject for the email.", "subject")
    if len(subject) > MAX_SUBJECT:
        raise ValidationError(f"Shorten the subject to at most {MAX_SUBJECT} characters.", "subject")
    if not body:
        raise ValidationError("Write a message; the subscribe links are added below it.", "body")
    if len(body) > MAX_BODY:
        raise ValidationError(f"Shorten the message to at most {MAX_BODY} characters.", "body")
    return Draft(
        address,
        subject,
        body,
        parse_template(subject, "subject", "subject"),
        parse_template(body, "message", "body"),
    )


@dataclass(frozen=True)
class CalendarApp:
    """One calendar app in the email: its one-click link, what to do, how often it refreshes."""

    name: str
    url: str
    steps: str
    refresh: str


_OUTLOOK_STEPS = "Opens {} in your browser with the address filled in; sign in if asked and confirm."
# (name, the FeedLinks field of its one-click link, what to do, how often it refreshes). The
# refresh lines say what each app is known to do, not promises: no vendor publishes a guaranteed
# interval, and Google and Outlook.com ignore the REFRESH-INTERVAL a feed asks for (docs/protocol.md).
CALENDAR_APPS = (
    (
        "Apple Calendar (iPhone, iPad, Mac)",
        "webcal_url",
        "Opens the Calendar app; confirm with Subscribe.",
        "Checks as often as its Auto-refresh setting says: on a Mac as often as every 5 minutes; "
        "iPhone and iPad follow Settings › Calendar › Accounts › Fetch New Data.",
    ),
    (
        "Google Calendar",
        "google_url",
        "Opens Google Calendar in your browser; click Add. It then shows on your phone too.",
        "Google decides when to look again: usually every several hours, sometimes only once a day. "
        "There is no refresh button, and nothing on our side makes it faster.",
    ),
    (
        "Outlook.com",
        "outlook_url",
        _OUTLOOK_STEPS.format("Outlook.com"),
        "Outlook looks again on its own schedule, typically every few hours (often about every "
        "3 hours, sometimes longer); there is no refresh button.",
    ),
    (
        "Microsoft 365 (work or school account)",
        "office365_url",
        _OUTLOOK_STEPS.format("Outlook on the web"),
        "Like Outlook.com: every few hours, on Microsoft's schedule.",
    ),
    (
        "Thunderbird",
        "webcal_url",
        "Opens Thunderbird if it handles calendar links on your computer. If not: in Thunderbird "
        "choose New Calendar › On the Network and paste the address above.",
        "Checks as often as the calendar's properties say (every 30 minutes unless changed).",
    ),
)


def calendar_apps(links: tokens.FeedLinks) -> list[CalendarApp]:
    """The apps with their links to this feed, in the order most staff use them."""
    return [
        CalendarApp(name, getattr(links, field), steps, refresh)
        for name, field, steps, refresh in CALENDAR_APPS
    ]
