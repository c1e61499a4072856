"""WSGI entry point for gunicorn: `gunicorn -c gateway/gunicorn.conf.py gateway.wsgi:app`."""

from gateway.app import create_app
from shared import logs

logs.configure("gateway")
app = create_app()
