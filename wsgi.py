"""WSGI entry point for gunicorn and friends: `gunicorn wsgi:app`."""

from web import create_app

app = create_app()
