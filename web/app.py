"""create_app: builds the Flask app from a Settings object (or the environment)."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from importlib import resources

from flask import Flask, Response, abort, request
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.accounts.credentials import Vault, load_or_create_keys
from calsync.feeds.accounts.keys import Sealer
from calsync.feeds.calendars.caldav_store import open_caldav_store
from calsync.feeds.calendars.channels import ChannelContext, provider_channels, push_possible
from calsync.feeds.calendars.provider_access import ProviderSetup
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
from calsync.web.errors import register_error_handlers
from calsync.web.formatting import register_filters
from calsync.web.log_redaction import install_log_redaction
from calsync.web.routing import LazyBuilderRule
from calsync.web.security import init_security


class Services:
    """What views need besides the request: created once per app, shared by its threads."""

    def __init__(self, settings: Settings) -> None:
        assert settings.secret_key
        self.settings = settings
        settings.prepare_data_dir()  # 0700 folder, 0600 database file before SQLite opens it
        self.engine = _engine(settings)
        self.sessions = make_session_factory(self.engine)
        self.sealer = Sealer(settings.secret_key, TOKEN_PURPOSE)
        self.feed_cache = FeedCache(settings.feed_cache_bytes)
        self.vault = Vault(load_or_create_keys(settings.credentials_key, settings.data_dir))
        limits = FetchLimits(
            max_bytes=settings.fetch_max_bytes, total_seconds=settings.fetch_timeout_seconds,
            ports=frozenset({80, 443, *settings.fetch_allowed_ports}),
        )
        self.sync = SyncContext(
            sessions=self.sessions,
            vault=self.vault,
            stores=open_caldav_store,
            allow_private=settings.allow_private_networks,
            limits=limits,
            providers=ProviderSetup.of(settings, limits),  # Google / Microsoft connections
            max_occurrences=settings.max_occurrences,
            lease_seconds=settings.sync_lease_seconds,
        )
        self._jobs: Jobs | None = None
        # Seconds since the epoch, for expiries checked in views (a CalDAV discovery's sealed
        # list); tests set a fake clock here instead of patching time.time for every thread.
        self.clock: Callable[[], float] = time.time
        self.mail = _mail_context(settings, self.sessions)
        # The vault seals stored emails that carry secret links (feeds.mail.outbox).
        configure_sessions(self.sessions, MailIdentity(settings.mail_from, settings.base_url, self.vault))
        event.listen(self.sessions, "after_commit", _weakly(self._deliver_written_emails))
        event.listen(self.sessions, "after_rollback", take_written)
        event.listen(self.sessions, "after_commit", _weakly(self._enqueue_requested_jobs))
        event.listen(self.sessions, "after_rollback", _weakly(self._forget_requested_jobs))

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
    def channels(self) -> ChannelContext:
        """Change channels of Google/Microsoft connections (feeds/calendars/channels.py); the
        webhook addresses are CALSYNC_BASE_URL + /hooks/..., used only when it is https."""
        return ChannelContext(self.sessions, self.settings.base_url,
                              provider_channels(self.sessions, self.vault, self.sync.providers))

    @property
    def jobs(self) -> Jobs:
        """The task queue, built on first use (the API enqueues; serve/worker consume)."""
        if self._jobs is None:
            huey = make_huey(self.settings.queue_url, self.settings.data_dir)
            self._jobs = Jobs(huey, lambda: self.sync, lambda: self.mail, lambda: self.channels)
        return self._jobs


def _weakly(method: Callable[[Session], None]) -> Callable[[Session], None]:
    """A session listener that does not keep its app alive. SQLAlchemy keeps a factory's
    listeners in a class-level registry keyed weakly by the factory's session class; a bound
    method of Services refers back to that class (Services.sessions), so the entry, the
    services, their engine and feed cache would live as long as the process. One app per
    process does not notice; the test suite built a thousand per worker, and every full garbage
    collection then walked them all."""
    ref = weakref.WeakMethod(method)

    def listener(session: Session) -> None:
        bound = ref()
        if bound is not None:  # else the app is gone, and so are its sessions
            bound(session)

    return listener


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


# The blueprints whose forms browsers post, guarded by Fetch Metadata and CSRF tokens.
BROWSER_BLUEPRINTS = ("admin", "staff", "oauth")


def _refuse_ids_beyond_the_key_range() -> None:
    for value in (request.view_args or {}).values():
        if isinstance(value, int) and not 0 <= value <= MAX_KEY:
            abort(404)


def _reject_cross_site() -> Response | None:
    """Refuse state-changing requests to the browser pages (admin, staff self-service) that
    browsers label as coming from another site.

    Flask-WTF's HTTPS check compares the Referer with the host, but every page here sends
    `Referrer-Policy: no-referrer` (feed URLs are secrets), so that check is off and
    Fetch Metadata (`Sec-Fetch-Site`, sent by current browsers whatever the referrer policy)
    takes its place, in front of the CSRF token.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if request.blueprint not in BROWSER_BLUEPRINTS:
        return None
    if request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none"):
        return None
    return Response("Cross-site requests are not accepted.\n", status=403, mimetype="text/plain")


def _wire(app: Flask, services: Services) -> None:
    """Blueprints, CSRF and error handlers: the app-wide wiring, here and in web/errors.py only
    (tests/unit/test_architecture.py), so no blueprint reaches into the others."""
    from calsync.web import admin, api, oauth, public_feeds, self_service, webhooks

    admin.init_login(app)
    app.config.setdefault("WTF_CSRF_SSL_STRICT", False)  # see _reject_cross_site
    csrf = CSRFProtect(app)
    # Machines, not browsers, call these: the API uses bearer keys, feeds use secret URLs.
    csrf.exempt(api.bp)
    csrf.exempt(public_feeds.bp)
    csrf.exempt(webhooks.bp)  # Google and Microsoft deliver notifications; the channel secret guards it
    app.before_request(_reject_cross_site)
    register_filters(app)
    # Whether Google/Microsoft can deliver change notifications here (connection pages say so).
    app.jinja_env.globals["PUSH_POSSIBLE"] = push_possible(services.settings.base_url)
    for blueprint in (public_feeds.bp, api.bp, admin.bp, self_service.bp, webhooks.bp, oauth.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app, services.engine)


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> Flask:
    settings = (settings or load_settings()).with_secret_key()
    # Templates ship as package data of calsync (calsync/templates), found through importlib.
    templates = resources.files("calsync") / "templates"
    app = Flask(__name__, template_folder=str(templates), static_folder=str(templates / "static"))
    app.url_rule_class = LazyBuilderRule  # URL builders compiled on first use (web/routing.py)
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

    _wire(app, services)
    install_log_redaction()  # feed tokens and connect links never reach a log (log_redaction.py)
    logging.getLogger("calsync").setLevel(logging.INFO)
    return app
