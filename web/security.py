"""Security headers on every response (docs/protocol.md "Secrets", OWASP secure headers)."""

from __future__ import annotations

from flask import Flask, Response

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def _headers(response: Response) -> Response:
    if response.status_code == 304:
        # A 304 only refreshes the cached response's validators (RFC 9110 §15.4.5).
        return response
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    # Pages show feed URLs, which are secrets: never leak them in a Referer header.
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def init_security(app: Flask) -> None:
    app.after_request(_headers)
