"""An app that is no longer used is freed with everything it holds: its engine, its feed cache,
its session factory. A process that builds more than one app (the test suite, the benchmarks)
must not keep them all.

Before: each app's after-commit listeners (enqueue the jobs and deliver the emails a
transaction asked for) were bound methods of its services, kept by SQLAlchemy's class-level
event registry. That registry is keyed weakly by the session class of each session factory, but
its values referred back to that class through the services, so no app was ever freed: an xdist
worker ended the suite with a thousand of them, 1.6-3 million objects, and full garbage
collections that stopped it for up to 2.9 s."""

from __future__ import annotations

import gc
import weakref

from sqlalchemy import text

from calsync.feeds.settings import Settings
from calsync.web import create_app


def test_a_dropped_app_is_freed_with_its_engine_and_feed_cache(settings: Settings) -> None:
    app = create_app(settings, migrate=False)
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:  # a commit: the listeners run
        session.execute(text("SELECT 1"))
    held = {"services": weakref.ref(services), "engine": weakref.ref(services.engine),
            "feed cache": weakref.ref(services.feed_cache), "sessions": weakref.ref(services.sessions)}
    services.engine.dispose()
    del app, services, session
    gc.collect()
    assert [name for name, ref in held.items() if ref() is not None] == []
