"""The web console at /ui: sign-in, keys, usage, status and a playground.

Server-rendered (Jinja2 templates in `templates/`), with one small script and one
stylesheet of its own in `static/`: no CDN, no node build. Sessions live in Redis (so
every replica honours them and sign-out ends them); see `session.py` for the cookie,
the CSRF tokens and the Content-Security-Policy.
"""

from gateway.console.pages import routes

__all__ = ["routes"]
