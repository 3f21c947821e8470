"""WSGI entry point for gunicorn and friends: `gunicorn wsgi:app`."""

from calsync.web import create_app

app = create_app()
