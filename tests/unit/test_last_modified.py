"""Last-Modified of a feed (feeds/publishing/feed.py): never later than Date (RFC 9110
§8.8.2.1), and If-Modified-Since still tells apart two changes made in the same second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from calsync.feeds.company_settings import CompanySettings
from calsync.feeds.publishing.feed import PublishedFeed, last_modified

T = datetime(2026, 5, 4, 12, 0, 7, tzinfo=UTC)  # a whole second
SECOND = timedelta(seconds=1)


def feed(changed: datetime, now: datetime) -> PublishedFeed:
    return PublishedFeed(
        token_id=1, last_used_at=None, company_id=1, company_name="Salon", company_timezone="UTC",
        scope="staff", scope_id=1, privacy="full", settings=CompanySettings(), window=(T, T),
        cache_key="k", scope_key="s", etag='"e"', changed_at=changed,
        last_modified=last_modified(changed, now),
    )


def revalidate(held: PublishedFeed, current: PublishedFeed) -> int:
    """What a client holding `held` gets asking with If-Modified-Since alone."""
    return 304 if current.unchanged_since(held.last_modified) else 200


@pytest.mark.parametrize("changed", [T, T + timedelta(microseconds=1), T + timedelta(milliseconds=999)])
@pytest.mark.parametrize("later", [timedelta(0), timedelta(milliseconds=500), 3 * SECOND, timedelta(days=2)])
def test_never_later_than_the_answer_and_on_whole_seconds(changed: datetime, later: timedelta) -> None:
    now = changed + later
    value = last_modified(changed, now)
    assert value <= now and value.microsecond == 0


def test_a_change_made_by_a_clock_ahead_of_ours_does_not_pass_date_either() -> None:
    assert last_modified(T + 30 * SECOND, T) == T


def test_once_the_second_is_over_the_date_validates() -> None:
    changed = T + timedelta(milliseconds=300)
    held = feed(changed, T + 5 * SECOND)
    assert held.last_modified == T + SECOND  # the end of the change's second
    assert revalidate(held, feed(changed, T + 60 * SECOND)) == 304


def test_two_changes_in_one_second_still_change_what_the_date_validates() -> None:
    first, second = T + timedelta(milliseconds=100), T + timedelta(milliseconds=600)
    held = feed(first, first + timedelta(milliseconds=50))  # answered within the same second
    assert held.last_modified == T
    assert revalidate(held, feed(second, second + timedelta(milliseconds=10))) == 200
    assert revalidate(held, feed(second, second + 10 * SECOND)) == 200
    # With nothing changed, such an early answer costs one full answer more, then 304s.
    unchanged = feed(first, first + 10 * SECOND)
    assert revalidate(held, unchanged) == 200
    assert revalidate(unchanged, feed(first, first + 20 * SECOND)) == 304


def test_a_change_on_a_whole_second_is_not_lost() -> None:
    held = feed(T, T + timedelta(milliseconds=200))
    assert held.last_modified == T
    assert revalidate(held, feed(T, T + 3 * SECOND)) == 304
    assert revalidate(held, feed(T + timedelta(microseconds=1), T + 3 * SECOND)) == 200
