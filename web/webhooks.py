"""The public webhooks Google Calendar and Microsoft Graph deliver change notifications to
(issues 11/12). Machines call them, so they are CSRF-exempt (web/app.py); what makes a request
trustworthy is the channel's secret, checked in feeds/calendars/channel_messages.py.

Both answer at once and do no provider work in the request: a notification becomes a queued
sync job (feeds/jobs.py) in one short transaction. Google retries a slow or failed delivery
with exponential backoff; Graph expects an answer within 3 seconds, and the validation
handshake within 10, or it drops the notification / refuses the subscription.

Nothing secret is logged: not the tokens, the clientState, nor the validationToken.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from calsync.feeds.calendars.channel_messages import accept_google, accept_graph, graph_items
from calsync.web import db

bp = Blueprint("webhooks", __name__, url_prefix="/hooks")
log = logging.getLogger("calsync.webhooks")

# Google's notifications have an empty body; Graph batches up to a few hundred small JSON
# notifications (without resource data). Anything larger is not theirs.
GOOGLE_MAX_BYTES = 16 * 1024
GRAPH_MAX_BYTES = 512 * 1024
# Graph's validationToken is an opaque string of a few hundred characters; it is echoed back,
# so its size is capped and it is sent as text/plain (never rendered as HTML).
VALIDATION_TOKEN_MAX = 2048


def _plain(text: str, status: int) -> Response:
    response = Response(text, status=status, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    return response


def _too_large(limit: int) -> bool:
    return request.content_length is not None and request.content_length > limit


@bp.post("/google")
def google() -> Response:
    if _too_large(GOOGLE_MAX_BYTES):
        return _plain("Too large.\n", 413)
    headers = request.headers
    session = db.session()
    verdict = accept_google(session, channel_id=headers.get("X-Goog-Channel-ID"),
                            token=headers.get("X-Goog-Channel-Token"),
                            state=headers.get("X-Goog-Resource-State"),
                            number=headers.get("X-Goog-Message-Number"))
    if verdict == "unknown":
        return _plain("Unknown channel.\n", 404)
    if verdict == "forbidden":
        log.warning("refused a Google notification: wrong channel token")
        return _plain("Wrong channel token.\n", 403)
    session.commit()  # the queued sync is enqueued after the commit (web/app.py)
    return Response(status=204)


def _graph(lifecycle: bool) -> Response:
    # The validation handshake (subscription create): echo the token, as plain text, at once.
    token = request.args.get("validationToken")
    if token is not None:
        if not token or len(token) > VALIDATION_TOKEN_MAX:
            return _plain("Bad validation token.\n", 400)
        return _plain(token, 200)
    if _too_large(GRAPH_MAX_BYTES):
        return _plain("Too large.\n", 413)
    items = graph_items(request.get_json(silent=True, force=True))
    if items is None:
        return _plain("Expected a JSON object with a \"value\" list of notifications.\n", 400)
    session = db.session()
    batch = accept_graph(session, items, lifecycle=lifecycle)
    session.commit()
    if batch.refused or batch.unknown:
        log.warning("graph notifications ignored: %d with a wrong clientState, %d for unknown "
                    "subscriptions", batch.refused, batch.unknown)
    return Response(status=202)


@bp.post("/microsoft")
def microsoft() -> Response:
    return _graph(lifecycle=False)


@bp.post("/microsoft/lifecycle")
def microsoft_lifecycle() -> Response:
    return _graph(lifecycle=True)
