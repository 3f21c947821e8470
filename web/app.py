"""create_app: builds the Flask app from a Settings object (or the environment)."""

from __future__ import annotations

import logging
from importlib import resources

from flask import Flask, Response, abort, jsonify, request
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import Vault, load_or_create_keys
from calsync.feeds.accounts.keys import Sealer
from calsync.feeds.calendars.sync import SyncContext
from calsync.feeds.errors import ConfigurationError
from calsync.feeds.jobs import Jobs, make_huey
from calsync.feeds.mail.delivery import MailContext
from calsync.feeds.mail.outbox import MailIdentity, configure_sessions, take_written
from calsync.feeds.mail.smtp import parse_smtp_url
from calsync.feeds.publishing.cache import FeedCache
from calsync.feeds.publishing.tokens import TOKEN_PURPOSE
from calsync.feeds.scheduling.change_effects import JOBS_KEY
from calsync.feeds.settings import Settings, load_settings
from calsync.feeds.sources.fetch import FetchLimits
from calsync.models import MAX_KEY, make_engine, make_session_factory
from calsync.web import db
from calsync.web.security import init_security


class Services:
    """What views need besides the request: created once per app, shared by its threads."""

    def __init__(self, settings: Settings) -> None:
        assert settings.secret_key
        self.settings = settings
        self.engine = _engine(settings)
        self.sessions = make_session_factory(self.engine)
        self.sealer = Sealer(settings.secret_key, TOKEN_PURPOSE)
        self.feed_cache = FeedCache(settings.feed_cache_bytes)
        self.vault = Vault(load_or_create_keys(settings.credentials_key, settings.data_dir))
        self.sync = SyncContext(
            sessions=self.sessions,
            vault=self.vault,
            allow_private=settings.allow_private_networks,
            limits=FetchLimits(
                max_bytes=settings.fetch_max_bytes, total_seconds=settings.fetch_timeout_seconds
            ),
            max_occurrences=settings.max_occurrences,
            lease_seconds=settings.sync_lease_seconds,
        )
        self._jobs: Jobs | None = None
        self.mail = _mail_context(settings, self.sessions)
        configure_sessions(self.sessions, MailIdentity(settings.mail_from, settings.base_url))
        event.listen(self.sessions, "after_commit", self._deliver_written_emails)
        event.listen(self.sessions, "after_rollback", take_written)
        event.listen(self.sessions, "after_commit", self._enqueue_requested_jobs)
        event.listen(self.sessions, "after_rollback", self._forget_requested_jobs)

    def _enqueue_requested_jobs(self, session: Session) -> None:
        for task, argument in sorted(session.info.pop(JOBS_KEY, set())):
            try:
                self.jobs.enqueue(task, argument)
            except Exception:  # the queue being down must not fail a committed change
                logging.getLogger("calsync.jobs").exception("could not enqueue %s", task)

    def _forget_requested_jobs(self, session: Session) -> None:
        session.info.pop(JOBS_KEY, None)

    def _deliver_written_emails(self, session: Session) -> None:
        """Emails written in the committed transaction go out now, not at the next schedule
        run; without SMTP they wait in the outbox."""
        if take_written(session) and self.mail.smtp is not None:
            try:
                self.jobs.enqueue_delivery()
            except Exception as exc:  # the outbox row is kept; the schedule sends it
                logging.getLogger("calsync.jobs").warning(
                    "could not queue email delivery (%s); the next scheduled run sends it",
                    type(exc).__name__)

    @property
    def jobs(self) -> Jobs:
        """The task queue, built on first use (the API enqueues; serve/worker consume)."""
        if self._jobs is None:
            huey = make_huey(self.settings.queue_url, self.settings.data_dir)
            self._jobs = Jobs(huey, lambda: self.sync, lambda: self.mail)
        return self._jobs


def _mail_context(settings: Settings, sessions: sessionmaker[Session]) -> MailContext:
    smtp = None
    if settings.smtp_url is not None:
        smtp = parse_smtp_url(settings.smtp_url.get_secret_value(), settings.smtp_timeout_seconds)
    return MailContext(sessions=sessions, smtp=smtp, max_attempts=settings.mail_max_attempts)


def _shown_url(settings: Settings) -> str:
    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def _engine(settings: Settings) -> Engine:
    try:
        # One pooled connection per worker thread plus a few for web requests, so a busy
        # worker does not open and close connections beyond the pool on every job.
        pooled = {} if settings.resolved_database_url.startswith("sqlite") else {
            "pool_size": max(5, settings.workers + 2)}
        return make_engine(settings.resolved_database_url, **pooled)
    except ImportError as exc:
        raise ConfigurationError(
            f"The database driver for {_shown_url(settings)} (CALSYNC_DATABASE_URL) is not "
            f"installed ({exc}). For PostgreSQL install calsync[postgres]."
        ) from exc


RETRY_AFTER_SECONDS = 30


def _database_unavailable(exc: Exception) -> Response:
    """The database cannot be reached (restarting, failing over, locked): 503 with Retry-After,
    so calendar apps and API clients come back later, instead of a 500 page. Nothing here
    touches the database again (no template with the logged-in admin, no session). Once it is
    back the next request just works: the pool tests each connection before use
    (pool_pre_ping), so connections that died with the old server are replaced."""
    # A feed's path is its secret: logged without the token.
    path = "/feeds/…" if request.path.startswith("/feeds/") else request.path
    logging.getLogger("calsync.web").warning(
        "database unavailable during %s %s: %s", request.method, path,
        type(getattr(exc, "orig", exc)).__name__)
    message = (f"The service is briefly unavailable (its database cannot be reached); try again "
               f"in {RETRY_AFTER_SECONDS} seconds.")
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"}
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        response = jsonify({"error": message})
        response.status_code = 503
        response.headers.update(headers)
        return response
    return Response(message + "\n", status=503, headers=headers, mimetype="text/plain")


def _refuse_ids_beyond_the_key_range() -> None:
    for value in (request.view_args or {}).values():
        if isinstance(value, int) and not 0 <= value <= MAX_KEY:
            abort(404)


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> Flask:
    settings = (settings or load_settings()).with_secret_key()
    # Templates ship as package data of calsync (calsync/templates), found through importlib.
    templates = resources.files("calsync") / "templates"
    app = Flask(__name__, template_folder=str(templates), static_folder=str(templates / "static"))
    # Every <int:…> id of every route stops at the key range: an out-of-range id is a plain
    # 404 (in the blueprint's own format) instead of a database error (PostgreSQL keys are
    # INTEGER). A hook rather than a bounded URL converter, which would turn such URLs into 405s.
    app.before_request(_refuse_ids_beyond_the_key_range)
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
        from calsync.migrations import upgrade_database

        try:
            upgrade_database(services.engine)
        except OperationalError as exc:
            services.engine.dispose()
            raise ConfigurationError(
                f"Cannot open the database {_shown_url(settings)} (CALSYNC_DATABASE_URL, or "
                f"CALSYNC_DATA_DIR for the default SQLite file): {exc.orig}. Check that it exists "
                "and can be reached, and that the folder is writable."
            ) from exc
    db.init_app(app)
    init_security(app)

    from calsync.web import admin, api, public_feeds

    app.register_blueprint(public_feeds.bp)
    app.register_blueprint(api.bp)
    admin.init_app(app)
    # SQLAlchemy's wrappers, and the driver's own classes: the feed lookup runs on the DBAPI
    # cursor directly (publish._FeedLookup), where errors arrive unwrapped.
    dbapi = services.engine.dialect.loaded_dbapi
    for error in (OperationalError, InterfaceError, getattr(dbapi, "OperationalError", None),
                  getattr(dbapi, "InterfaceError", None)):
        if isinstance(error, type) and issubclass(error, Exception):
            # In every blueprint's scope too: a blueprint's catch-all handler (the API's JSON
            # 500) would otherwise be found before an application-wide one.
            for scope in (None, *app.blueprints):
                app.error_handler_spec[scope][None][error] = _database_unavailable
    logging.getLogger("calsync").setLevel(logging.INFO)
    return app
