"""Which URLs and addresses calsync may fetch (docs/protocol.md, "Fetching user-supplied URLs").

Users type these URLs, so a URL is a request to make our server connect somewhere. Only public
http(s) addresses are allowed unless the operator allows private networks for tests or a local
demo. The decision works on resolved addresses, so every spelling of an address (decimal,
octal, short forms, IPv4-mapped IPv6, DNS names pointing inwards) meets the same rule.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from calsync.feeds.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused besides what ipaddress already flags (is_private, is_loopback, ...).
EXTRA_BLOCKED = [
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT (RFC 6598)
    ipaddress.ip_network("0.0.0.0/8"),  # "this network"
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64 can reach IPv4-internal hosts
    ipaddress.ip_network("2002::/16"),  # 6to4 embeds an IPv4 address
]


def address_problem(address: str | IPAddress, allow_private: bool = False) -> str | None:
    """Why connecting to `address` is refused, or None when it is allowed."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "it is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address inside.
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return address_problem(mapped, allow_private)
        if ip.scope_id:
            return "it is a link-local address"
    if ip.is_multicast:
        return "it is a multicast address"
    if ip.is_unspecified:
        return "it is an unspecified address"
    if ip.is_reserved and not ip.is_private:
        return "it is a reserved address"
    if allow_private:
        return None
    if ip.is_loopback:
        return "it is this server itself (loopback)"
    if ip.is_link_local:
        return "it is a link-local address (such as cloud metadata)"
    if ip.is_private or any(ip in net for net in EXTRA_BLOCKED if net.version == ip.version):
        return "it is a private network address"
    if not ip.is_global:
        return "it is not a public internet address"
    return None


def normalise_calendar_url(url: str) -> str:
    """The URL to fetch for what a user typed: webcal becomes https; only http(s) is allowed.

    Raises ValidationError with a sentence saying what to change.
    """
    text = (url or "").strip()
    if not text:
        raise ValidationError(
            "Enter the calendar's address (an https:// or webcal:// URL).", "url", "address"
        )
    if len(text) > 2048:
        raise ValidationError("That address is too long (over 2048 characters).", "url", "address")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # a bracketed host that is no IP address: http://[bc:.93:35]/
        raise ValidationError("That address is not a valid URL; check the host name.", "url",
                              "address") from exc
    scheme = parts.scheme.lower()
    if scheme in ("webcal", "webcals"):
        # webcal is "subscribe to this over HTTP"; every provider serves it over https.
        scheme = "https"
    if scheme not in ("http", "https"):
        raise ValidationError(
            "Only http://, https:// and webcal:// calendar addresses can be subscribed to.", "url", "address"
        )
    if not parts.hostname:
        raise ValidationError("That address has no host name.", "url", "address")
    if parts.username or parts.password:
        raise ValidationError(
            "Remove the user name and password from the address; use a CalDAV connection for "
            "calendars that need a login.",
            "url",
            "address",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValidationError("That address has an invalid port number.", "url", "address") from exc
    if any(ch in text for ch in "\r\n\t "):
        raise ValidationError("That address contains spaces or line breaks.", "url", "address")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def redact_url(url: str) -> str:
    """A URL safe to show and log: host and the start of the path, never the secret parts.

    Calendar "secret addresses" (Google's private ICS, iCloud's published calendars) carry
    their secret in the path or the query.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    path = parts.path or "/"
    segments = [s for s in path.split("/") if s]
    shown = "/".join(s if len(s) <= 12 and not any(c.isdigit() for c in s) else "…" for s in segments[:3])
    suffix = "/…" if len(segments) > 3 else ""
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}/{shown}{suffix}{query}"
