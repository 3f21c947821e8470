"""The Flask layer: app factory, blueprints (public feeds, admin UI, JSON API), auth and CLI."""

from calsync.web.app import create_app

__all__ = ["create_app"]
