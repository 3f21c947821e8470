"""The mail server: CALSYNC_SMTP_URL parsed, and one SMTP session that sends stored messages.

The password lives only in SmtpConfig (left out of its repr) and in the AUTH exchange. Every
failure becomes a DeliveryError whose message is a sentence naming the server and what to do,
fit for logs and the API: never the password, never the message.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

Tls = Literal["none", "starttls", "ssl"]
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: Tls = "none"
    timeout: float = 30.0

    @property
    def display(self) -> str:
        """How the server is named in errors and logs: host and port, no credentials."""
        return f"{self.host}:{self.port}"


def parse_smtp_url(url: str, timeout: float = 30.0) -> SmtpConfig:
    """smtp://user:pass@host:587?starttls=1 or smtps://user:pass@host:465.

    Raises ValueError with a message that never repeats the URL (it holds the password).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError("must start with smtp:// (optionally ?starttls=1) or smtps://")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError("has a port that is not a number between 1 and 65535") from None
    if not host:
        raise ValueError("names no mail server, e.g. smtp://user:pass@mail.example.com:587?starttls=1")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"starttls"})
    if unknown:
        raise ValueError(f"has unknown option(s) {', '.join(unknown)}; the only option is starttls=1")
    flag = query.get("starttls", ["0"])[-1].lower()
    if flag not in TRUE | FALSE:
        raise ValueError("has starttls set to something other than 1 or 0")
    starttls = flag in TRUE
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if not (username or "").isascii() or not (password or "").isascii():
        # smtplib sends AUTH as ASCII; better to say so now than fail on every email later.
        raise ValueError("has a user or password with non-ASCII characters, which the SMTP login "
                         "cannot send; use an ASCII password (special characters URL-encoded)")
    if scheme == "smtps" and starttls:
        raise ValueError("uses smtps:// (TLS from the start) together with starttls=1; choose one")
    tls: Tls = "ssl" if scheme == "smtps" else "starttls" if starttls else "none"
    return SmtpConfig(
        host=host,
        port=port or {"ssl": 465, "starttls": 587, "none": 25}[tls],
        username=username,
        password=password,
        tls=tls,
        timeout=timeout,
    )


class DeliveryError(Exception):
    """One email could not be handed to the mail server.

    `permanent`: the server refused this very message or recipient with a 5xx reply (RFC 5321
    §4.2.1), so trying the same again cannot help. `connection`: the server itself is unusable
    (unreachable, TLS, login), which is every email's problem, not this one's.
    """

    def __init__(self, message: str, *, permanent: bool = False, connection: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.connection = connection


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())[:200]
    return f"{code} {text}".strip()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)[:200] or type(exc).__name__


class SmtpSender:
    """One SMTP session, opened by the first send and reused for the rest of a batch.

    After a connection failure every further send fails at once with the same error, so a
    server that is down costs one timeout per batch, not one per email.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._smtp: smtplib.SMTP | None = None
        self._broken: DeliveryError | None = None

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def _open(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.tls == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            smtp.ehlo()
            if cfg.tls == "starttls":
                if not smtp.has_extn("starttls"):
                    # Never fall back to plain text: the login would give the password away.
                    raise DeliveryError(
                        f"The mail server {cfg.display} does not offer STARTTLS, so nothing was sent "
                        "rather than sending the password unencrypted; enable TLS on the server or "
                        "change CALSYNC_SMTP_URL.", connection=True)
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, cfg.password or "")
            return smtp
        except BaseException:
            smtp.close()
            raise

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        try:
            return self._open()
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"The mail server {cfg.display} refused the login of '{cfg.username}' ({_reason(exc)}); "
                "check the user and password in CALSYNC_SMTP_URL.", connection=True) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError(
                f"The mail server {cfg.display} does not accept a login here; remove the user and "
                "password from CALSYNC_SMTP_URL, or use ?starttls=1 or smtps://.", connection=True) from None
        except ssl.SSLError as exc:
            raise DeliveryError(
                f"A secure connection to the mail server {cfg.display} could not be set up "
                f"({exc.reason or _reason(exc)}); check the port and TLS options in CALSYNC_SMTP_URL.",
                connection=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"The mail server {cfg.display} could not be reached ({_reason(exc)}); "
                "the email stays in the outbox and will be retried.", connection=True) from None

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        if self._smtp is None:
            try:
                self._smtp = self._connect()
            except DeliveryError as exc:
                self._broken = exc
                raise
        try:
            self._smtp.sendmail(sender, [recipient], message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (550, b""))
            raise DeliveryError(
                f"The mail server refused the recipient ({_reply(code, text)}); check the address.",
                permanent=500 <= code < 600) from None
        except smtplib.SMTPSenderRefused as exc:
            # A configuration problem shared by every email: keep retrying, do not give up on this one.
            raise DeliveryError(
                f"The mail server refused the sender address ({_reason(exc)}); check CALSYNC_MAIL_FROM.",
            ) from None
        except smtplib.SMTPDataError as exc:
            raise DeliveryError(
                f"The mail server refused the email ({_reason(exc)}).",
                permanent=500 <= exc.smtp_code < 600) from None
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._broken = DeliveryError(
                f"The connection to the mail server {self.config.display} broke off ({_reason(exc)}); "
                "the email stays in the outbox and will be retried.", connection=True)
            self.close()
            raise self._broken from None
        except smtplib.SMTPException as exc:
            raise DeliveryError(f"The mail server did not take the email ({_reason(exc)}).") from None
