"""Feed links on a base URL that internet calendar services cannot reach are recognised."""

from __future__ import annotations

import pytest

from calsync.feeds.publishing.reachability import unreachable_from_internet


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000",
    "http://localhost:8000/",
    "http://LOCALHOST./",
    "http://[::1]:8000",
    "http://[::ffff:10.0.0.5]/",
    "http://10.1.2.3",
    "https://192.168.1.20",
    "https://172.16.0.9",
    "http://169.254.169.254",
    "https://calsync.local",
    "https://calsync.internal",
    "https://nas.home.arpa",
    "http://intranet",
    "http://100.64.0.1",  # carrier-grade NAT: not global
    "not a url",
])
def test_local_and_private_base_urls_are_unreachable(url: str) -> None:
    assert unreachable_from_internet(url)


@pytest.mark.parametrize("url", [
    "https://calendar.example.com",
    "https://calsync.example.org:8443/prefix",
    "http://93.184.216.34",
    "https://[2606:4700::6810:84e5]/",
])
def test_public_base_urls_are_reachable(url: str) -> None:
    assert not unreachable_from_internet(url)
