"""create_app: builds the Flask app from a Settings object (or the environment)."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from feeds.feed_cache import FeedCache
from feeds.keys import Sealer
from feeds.settings import Settings, load_settings
from feeds.tokens import TOKEN_PURPOSE
from models import make_engine, make_session_factory
from web import db
from web.security import init_security

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class Services:
    """What views need besides the request: created once per app, shared by its threads."""

    def __init__(self, settings: Settings) -> None:
        assert settings.secret_key
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        self.sessions = make_session_factory(self.engine)
        self.sealer = Sealer(settings.secret_key, TOKEN_PURPOSE)
        self.feed_cache = FeedCache(settings.feed_cache_bytes)


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> Flask:
    settings = (settings or load_settings()).with_secret_key()
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(TEMPLATES / "static"))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    services = Services(settings)
    app.extensions["calsync"] = services
    if migrate:
        from migrations import upgrade_database

        upgrade_database(services.engine)
    db.init_app(app)
    init_security(app)

    from web import admin, api, public_feeds

    app.register_blueprint(public_feeds.bp)
    app.register_blueprint(api.bp)
    admin.init_app(app)
    logging.getLogger("calsync").setLevel(logging.INFO)
    return app
