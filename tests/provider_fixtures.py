"""The Google Calendar and Microsoft Graph contract fakes, served on loopback for one test each
(a pytest plugin of tests/conftest.py). The company-wide accounts' token caches are emptied
around each, since every fake issues its own tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calsync.feeds.calendars.providers import company_google, company_microsoft
from tests.fakes.google_calendar import ServedFake, serve_google_fake
from tests.fakes.microsoft_graph import ServedGraph, serve_graph_fake


def _clear_token_caches() -> None:
    company_google.TOKENS.clear()
    company_microsoft.TOKENS.clear()


@pytest.fixture
def google() -> Iterator[ServedFake]:
    _clear_token_caches()
    with serve_google_fake() as served:
        yield served
    _clear_token_caches()


@pytest.fixture
def graph() -> Iterator[ServedGraph]:
    _clear_token_caches()
    with serve_graph_fake() as served:
        yield served
    _clear_token_caches()
