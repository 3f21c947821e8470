"""GET/HEAD /feeds/<token>.ics: the published calendars that calendar apps subscribe to.

Rules from docs/protocol.md: always 200 text/calendar (whatever the Accept header), no redirects, no
HTTP auth, strong ETag + Last-Modified, If-None-Match wins over If-Modified-Since, 404 with no
detail for unknown or revoked tokens. A 304 is decided from the version alone and never renders;
the version is read on a plain connection, and an ORM session is opened only to render.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, request
from sqlalchemy.exc import IntegrityError

from calsync.feeds.publishing.feed import PublishedFeed, feed_body, open_feed
from calsync.feeds.publishing.tokens import touch_feed_token
from calsync.web import db

bp = Blueprint("public_feeds", __name__)

TOKEN_MAX = 100
NOT_FOUND = b"Not found\n"


def _not_found() -> Response:
    return Response(NOT_FOUND, status=404, mimetype="text/plain")


def _client_has_it(feed: PublishedFeed, etags: tuple[str, str]) -> bool:
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
    with services.engine.connect() as conn:
        feed = open_feed(conn, token, now)
        if feed is None:
            return _not_found()
        if touch_feed_token(conn, feed.token_id, feed.last_used_at,
                            timedelta(seconds=services.settings.token_touch_seconds)):
            conn.commit()
    gzip_ok = "gzip" in request.headers.get("Accept-Encoding", "").lower()
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
    cache = services.feed_cache
    body = cache.body(feed.cache_key)
    if body is None:
        body = _render(feed)
    if gzip_ok:
        body = cache.gzipped(feed.cache_key, feed.scope_key, body)
        headers.append(("Content-Encoding", "gzip"))
    # Werkzeug drops the body of a HEAD response and keeps its Content-Length.
    return Response(body, status=200, headers=headers, content_type="text/calendar; charset=utf-8")


def _render(feed: PublishedFeed) -> bytes:
    services = db.services()
    for attempt in range(2):
        with services.sessions() as session:
            try:
                body = feed_body(session, feed, services.feed_cache)
                session.commit()
                return body
            except IntegrityError:
                # Another process stored the same fragments first; theirs are as good as ours.
                session.rollback()
                if attempt:
                    raise
    raise AssertionError("unreachable")
