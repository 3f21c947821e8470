"""The app's error responses, registered once for the whole app by create_app (web/app.py).

Each one answers in the format of the part that was asked: JSON under /api/ and for calsync.js
(which asks for JSON), a plain line for feeds (calendar apps show nothing else), a page for
browsers. Blueprints register none of these: a handler on one blueprint would not see a 404 of
an unknown URL (no blueprint matched), and two copies drift apart.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.wrappers import Response

from calsync.web.views_common import wants_json

RETRY_AFTER_SECONDS = 30


def _csrf_failed(_exc: CSRFError) -> tuple[str | Response, int]:
    if request.path.startswith("/api/") or wants_json():
        return jsonify({"error": "The page was open too long or came from elsewhere; reload it "
                                 "and try again."}), 400
    return render_template("admin/error.html", title="Please try again",
                           message="This form was open for too long, or it was not sent from "
                                   "this site. Go back, reload the page and try again."), 400


def _not_found(_exc: Exception) -> tuple[str | Response, int]:
    if request.path.startswith("/api/"):
        return jsonify({"error": "There is no such API endpoint; see /api/v1/openapi.json."}), 404
    if request.path.startswith("/feeds/"):
        return "Not found\n", 404
    if wants_json():
        return jsonify({"error": "That does not exist (any more)."}), 404
    return render_template("admin/error.html", title="Not found",
                           message="That page does not exist, or what it showed was deleted."), 404


def _not_allowed(_exc: Exception) -> tuple[str | Response, int]:
    if request.path.startswith("/api/"):
        return jsonify({"error": "This endpoint does not take that method."}), 405
    return "Method not allowed\n", 405


def _database_unavailable(exc: Exception) -> Response:
    """The database cannot be reached (restarting, failing over, locked): 503 with Retry-After,
    so calendar apps and API clients come back later, instead of a 500 page. Nothing here
    touches the database again (no template with the logged-in admin, no session). Once it is
    back the next request just works: the pool tests each connection that sat idle before use
    (models.session.ping_idle_connections), and a disconnect error replaces every connection
    taken before it, so connections that died with the old server are replaced."""
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


def register_error_handlers(app: Flask, engine: Engine) -> None:
    """Call after every blueprint is registered (the database handler goes into each scope)."""
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, _not_allowed)
    # SQLAlchemy's wrappers, and the driver's own classes: the feed lookup runs on the DBAPI
    # cursor directly (publishing.feed), where errors arrive unwrapped.
    dbapi = engine.dialect.loaded_dbapi
    for error in (OperationalError, InterfaceError, getattr(dbapi, "OperationalError", None),
                  getattr(dbapi, "InterfaceError", None)):
        if isinstance(error, type) and issubclass(error, Exception):
            # In every blueprint's scope too: a blueprint's catch-all handler (the API's JSON
            # 500) would otherwise be found before an application-wide one.
            for scope in (None, *app.blueprints):
                app.error_handler_spec[scope][None][error] = _database_unavailable
