"""Fixtures shared by the two-way tests against the Google and Graph fakes: both fakes served
and configured, Zoë (09-17 UTC every day, two-way sync on) and her self-service browser.
Test modules import them by name (`from tests.provider_two_way import settings, visitor, zoe`)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from calsync.feeds.settings import Settings
from tests.admin_helpers import Browser
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph
from tests.linked_helpers import WEEK_NINE_TO_FIVE
from tests.provider_helpers import self_service_browser, with_google, with_microsoft


@pytest.fixture
def settings(settings: Settings, google: ServedFake, graph: ServedGraph) -> Settings:
    return with_microsoft(with_google(settings, google), graph)


@pytest.fixture
def zoe(api: Api) -> dict[str, Any]:
    """Zoë works 09-17 UTC every day; two-way sync is on."""
    api.patch("/settings", {"bidirectional_sync": True})
    return api.make_staff(timezone="UTC", working_hours=WEEK_NINE_TO_FIVE)


@pytest.fixture
def visitor(app: Flask, zoe: dict[str, Any]) -> Browser:
    """Zoë's browser on her self-service page."""
    return self_service_browser(app, zoe["id"])
