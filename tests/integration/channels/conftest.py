"""Fixtures of the change-notification tests (issues 11/12): here the Google and Graph fakes
deliver notifications to calsync, served on loopback (tests/channel_helpers.py); they replace
the plain fakes of tests/provider_fixtures.py in this folder only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from calsync.feeds.settings import Settings
from tests.channel_helpers import Loopback, provider_settings, pushing_google, pushing_graph, serve
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph


@pytest.fixture
def loopback() -> Loopback:
    return Loopback()


@pytest.fixture
def google(loopback: Loopback) -> Iterator[ServedFake]:
    yield from pushing_google(loopback)


@pytest.fixture
def graph(loopback: Loopback) -> Iterator[ServedGraph]:
    yield from pushing_graph(loopback)


@pytest.fixture
def settings(settings: Settings, google: ServedFake, graph: ServedGraph) -> Settings:
    return provider_settings(settings, google, graph)


@pytest.fixture
def served(app: Flask, loopback: Loopback) -> Iterator[str]:
    server = serve(app, loopback)
    yield loopback.url
    server.close()
