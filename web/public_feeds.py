"""GET/HEAD /feeds/<token>.ics: the published calendars that calendar apps subscribe to.

Rules from docs/protocol.md: always 200 text/calendar (whatever the Accept header), no redirects, no
HTTP auth, strong ETag + Last-Modified, If-None-Match wins over If-Modified-Since, 404 with no
detail for unknown or revoked tokens. A 304 is decided from the version alone and never renders;
the version is read on a plain connection, and a render reads through prebuilt statements
(feeds/publishing/prebuilt.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from calsync.feeds.publishing.feed import Ahead, PublishedFeed, feed_body, lookup_feed
from calsync.feeds.publishing.feed_changes import CACHE_ONLY
from calsync.feeds.publishing.prebuilt import Reads
from calsync.feeds.publishing.segments import Later
from calsync.feeds.publishing.tokens import touch_feed_token
from calsync.web import db

bp = Blueprint("public_feeds", __name__)
log = logging.getLogger("calsync.feeds")

TOKEN_MAX = 100
NOT_FOUND = b"Not found\n"


def _not_found() -> Response:
    return Response(NOT_FOUND, status=404, mimetype="text/plain")


def _client_has_it(feed: PublishedFeed, etags: tuple[str, str]) -> bool:
    sent = request.environ.get("HTTP_IF_NONE_MATCH")  # request.headers' own source, read directly
    if sent in etags:
        return True  # what calendar apps send back: our own tag, verbatim; no parsing needed
    if request.if_none_match:
        # Weak comparison (RFC 9110 §13.1.2): a W/ prefix some proxies add still matches, and
        # the identity and gzip forms are the same content. Werkzeug keeps tags unquoted.
        return any(request.if_none_match.contains_weak(e.strip('"')) for e in etags)
    since = request.if_modified_since
    return since is not None and feed.unchanged_since(since.astimezone(UTC))


@bp.route("/feeds/<token>.ics", methods=["GET", "HEAD"])
def published_feed(token: str) -> Response:
    if len(token) > TOKEN_MAX:
        return _not_found()
    services = db.services()
    now = datetime.now(UTC)
    engine = services.engine
    # A DBAPI connection, not engine.connect(): the lookup is one prebuilt statement, and the
    # Connection wrapper (then the pool's checkout) cost more than the query (docs/scale.md);
    # on PostgreSQL none at all while no change was announced (feeds/publishing/feed_changes.py).
    cache = services.feed_cache
    # On PostgreSQL, a lookup that must read the token's row again reads it with the render's
    # first statement (feed.Ahead): the first GET after a change waits for one round trip.
    ahead = Ahead(cache)
    feed = lookup_feed(engine, token, now, listen=services.settings.feed_listen, ahead=ahead)
    if feed is None:
        return _not_found()
    every = timedelta(seconds=services.settings.token_touch_seconds)
    if feed.last_used_at is None or now - feed.last_used_at >= every:
        with engine.begin() as conn:  # at most once per `every` and token
            touch_feed_token(conn, feed.token_id, feed.last_used_at, every)
    gzip_ok = "gzip" in request.environ.get("HTTP_ACCEPT_ENCODING", "").lower()
    # A different content coding is a different representation: it gets its own strong ETag.
    gzip_etag = feed.etag[:-1] + '-gzip"'
    validators = [
        ("ETag", gzip_etag if gzip_ok else feed.etag),
        ("Cache-Control", "private, max-age=0, must-revalidate"),
        ("Vary", "Accept-Encoding"),
    ]
    if _client_has_it(feed, (feed.etag, gzip_etag)):
        # RFC 9110 §15.4.5: a 304 carries the validators and caching headers, nothing more.
        return Response(status=304, headers=validators)
    headers = validators + [
        ("Last-Modified", feed.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT")),
        ("Referrer-Policy", "no-referrer"),
        ("X-Robots-Tag", "noindex"),
        ("Content-Disposition", 'inline; filename="calendar.ics"'),
    ]
    entry = cache.body(feed.cache_key)
    later: Later = []
    rendered = entry is None
    if entry is None:
        with Reads(engine, services.sessions) as reads:  # reads only: its writes are in `later`
            entry = feed_body(reads, feed, cache, later, ahead)
    if gzip_ok:
        body: Any = (cache.gzipped(feed.cache_key, feed.scope_key, entry),)
        headers.append(("Content-Encoding", "gzip"))
    else:
        # A new body is its pieces, written in turn by the server; Werkzeug sets Content-Length
        # to their sum (and drops the body of a HEAD response, keeping its Content-Length).
        body = entry.pieces
    response = Response(body, status=200, headers=headers, content_type="text/calendar; charset=utf-8")
    if later:
        # Once the body is sent: the new fragments and segment written into the shared tables.
        # They are caches keyed by versions, and writing them first made the client wait
        # (issue 17, docs/scale.md).
        response.call_on_close(partial(_store, services.sessions, later))
    elif not rendered and not gzip_ok and len(entry.pieces) > 1:
        # A kept body served a second time: worth joining its pieces (5 MB copied once) so the
        # warm GETs that follow hand the server one object. Not at the first GET: a feed that
        # changes between fetches is served once per version, and its join was work for
        # nothing (and, after the response, still CPU time taken from the next request).
        response.call_on_close(entry.settle)
    return response


def _store(sessions: Any, later: Later) -> None:
    try:
        with sessions.begin() as session:
            # Cache tables only: this commit changes no feed's version (feed_changes.CACHE_ONLY).
            session.connection(execution_options={CACHE_ONLY: True})
            if session.get_bind().dialect.name == "postgresql":
                # Caches, made again from the appointments if lost: a crash may drop the last
                # of them, so the commit need not wait for the WAL to reach the disk (which
                # was most of the work after a PostgreSQL response; docs/scale.md).
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            for write in later:
                write(session)
    except SQLAlchemyError as exc:
        # Another process may have stored the same pieces first; either way the next render
        # finds them or makes them again. Never raised: the client has its answer.
        log.warning("rendered feed pieces were not stored (%s)", type(exc).__name__)
