"""The resolver every outgoing connection of calsync uses (docs/protocol.md, "Fetching user-supplied
URLs"): it decides on the addresses and the port before any packet is sent, and hands each
socket it connects to the session's Cutoff, which enforces the wall-clock deadline.

Checking inside the resolver the connection itself uses means the checked address is the one
connected to: no second lookup, no DNS-rebinding window.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from niquests.packages.urllib3.contrib.resolver.system import SystemResolver

from calsync.feeds.sources.addresses import address_problem
from calsync.feeds.sources.cutoff import Cutoff


class BlockedAddressError(OSError):
    """Raised inside the resolver; an OSError so the connection layer gives up cleanly."""


AddressPolicy = Callable[[str], str | None]


class GuardedResolver(SystemResolver):  # type: ignore[misc]
    """The system resolver, refusing any answer that contains a forbidden address, and any
    port outside `ports` (None: every port).

    `policy` maps an address to the reason it is refused (None: allowed); the default is
    address_problem with the operator's private-network setting, which also lifts the port rule
    (test servers and a local demo listen on any port).
    """

    def __init__(self, allow_private: bool, policy: AddressPolicy | None = None,
                 ports: frozenset[int] | None = None) -> None:
        super().__init__()
        self.allow_private = allow_private
        self.ports = None if allow_private else ports
        self.policy: AddressPolicy = policy or (lambda ip: address_problem(ip, allow_private))
        self.refusal: str | None = None
        self.cutoff = Cutoff()  # every socket this resolver connects, for the deadline

    def create_connection(self, *args: Any, **kwargs: Any) -> socket.socket:
        sock: socket.socket = super().create_connection(*args, **kwargs)
        self.cutoff.adopt(sock)
        return sock

    def getaddrinfo(self, host: Any, port: Any, family: Any, type: Any, proto: int = 0,
                    flags: int = 0, *, quic_upgrade_via_dns_rr: bool = False) -> list[Any]:
        if self.ports is not None and str(port) not in {str(p) for p in self.ports}:
            allowed = ", ".join(str(p) for p in sorted(self.ports))
            self.refusal = (f"The calendar address is not allowed: port {port} is not open to "
                            f"calendar subscriptions (allowed: {allowed}); use the calendar's "
                            "address without a port number, or ask your calsync administrator.")
            raise BlockedAddressError(self.refusal)
        try:
            answers = socket.getaddrinfo(host, port, family, type, proto, flags)
        except socket.gaierror:
            raise
        for answer in answers:
            problem = self.policy(str(answer[4][0]).split("%")[0])
            if problem is None and "%" in str(answer[4][0]):
                problem = "it is a link-local address"
            if problem is not None:
                # Refuse the whole name, not just that answer: a name with one inward-pointing
                # address is an attack or a misconfiguration either way.
                self.refusal = f"The calendar address is not allowed: {problem}."
                raise BlockedAddressError(self.refusal)
        return answers

    def recycle(self) -> GuardedResolver:
        return self
