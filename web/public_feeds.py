"""GET/HEAD /feeds/<token>.ics: the published calendars that calendar apps subscribe to.

Rules from PROTOCOL.md: always 200 text/calendar (whatever the Accept header), no redirects, no
HTTP auth, strong ETag + Last-Modified, If-None-Match wins over If-Modified-Since, 404 with no
detail for unknown or revoked tokens. A 304 is decided from the version alone and never renders.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, request
from sqlalchemy.exc import IntegrityError

from feeds.publish import PublishedFeed, feed_body, open_feed
from feeds.tokens import touch_feed_token
from web import db

bp = Blueprint("public_feeds", __name__)

TOKEN_MAX = 100


def _not_found() -> Response:
    return Response("Not found\n", status=404, mimetype="text/plain")


def _client_has_it(feed: PublishedFeed, etags: list[str]) -> bool:
    if request.if_none_match:
        # Weak comparison (RFC 9110 §13.1.2): a W/ prefix some proxies add still matches, and
        # the identity and gzip forms are the same content. Werkzeug keeps tags unquoted.
        return any(request.if_none_match.contains_weak(e.strip('"')) for e in etags)
    since = request.if_modified_since
    return since is not None and feed.last_modified <= since.astimezone(UTC)


@bp.route("/feeds/<token>.ics", methods=["GET", "HEAD"])
def published_feed(token: str) -> Response:
    if len(token) > TOKEN_MAX:
        return _not_found()
    services = db.services()
    session = db.session()
    feed = open_feed(session, token, datetime.now(UTC))
    if feed is None:
        return _not_found()
    touch_feed_token(session, feed.token, timedelta(seconds=services.settings.token_touch_seconds))
    gzip_ok = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    # A different content coding is a different representation: it gets its own strong ETag.
    gzip_etag = feed.etag[:-1] + '-gzip"'
    etag = gzip_etag if gzip_ok else feed.etag
    headers = {
        "ETag": etag,
        "Last-Modified": feed.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Vary": "Accept-Encoding",
        "Referrer-Policy": "no-referrer",
        "X-Robots-Tag": "noindex",
    }
    if _client_has_it(feed, [feed.etag, gzip_etag]):
        session.commit()
        return Response(status=304, headers=headers)
    try:
        body = feed_body(session, feed, services.feed_cache)
        session.commit()
    except IntegrityError:
        # Another process stored the same fragments first; theirs are as good as ours.
        session.rollback()
        feed = open_feed(session, token, datetime.now(UTC)) or feed
        body = feed_body(session, feed, services.feed_cache)
        session.commit()
    if gzip_ok:
        body = services.feed_cache.gzipped(feed.cache_key, body)
        headers["Content-Encoding"] = "gzip"
    headers["Content-Disposition"] = 'inline; filename="calendar.ics"'
    # Werkzeug drops the body of a HEAD response and keeps its Content-Length.
    return Response(body, status=200, headers=headers, content_type="text/calendar; charset=utf-8")
