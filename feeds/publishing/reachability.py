"""Whether calendar services on the internet can fetch feed links built on the base URL.

Google Calendar and Outlook.com fetch a subscribed feed from their own servers, so a link on a
loopback, private or local-only host (the default http://127.0.0.1:8000, a .local name) works
in a desktop app on the same network but never in them. The answer is read from the URL alone,
without a DNS lookup: a page render must not wait on the network, and a name that resolves
inwards is the operator's deliberate setup, not a slip to warn about.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Names that by convention never resolve on the public internet (RFC 6761 localhost, RFC 6762
# .local, RFC 8375 home.arpa; .internal and .lan are common private conventions).
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def unreachable_from_internet(base_url: str) -> bool:
    """True when feed links on `base_url` cannot be fetched by an internet calendar service."""
    try:
        host = (urlsplit(base_url).hostname or "").rstrip(".").lower()
    except ValueError:
        return True
    if not host:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host.endswith(LOCAL_SUFFIXES) or "." not in host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global
