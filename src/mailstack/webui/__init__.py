"""The web UI for users: log in, change the password, set spam filing.

Server-rendered (Jinja2, no JavaScript), mounted at `/` of the worker's HTTPS listener and
built at its first request (see mailstack.worker.web).
"""

from mailstack.webui.app import create_webui

__all__ = ["create_webui"]
