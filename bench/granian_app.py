"""ConnectLink for granian (``run.py --granian``), built as ``connectlink serve`` builds it for
uvicorn (``src/connectlink/cli/serve.py``), from the same ``CONNECTLINK_*`` variables
(``run.py`` sets ``CONNECTLINK_DATABASE_URL``): the settings from the environment, the metrics
in this one process's memory (``metrics_dir.prepare_directory`` before anything imports
prometheus_client), the log through ConnectLink's queued handler (as JSON: stderr is not a
terminal here), and ``X-Forwarded-*`` believed from the trusted proxies by uvicorn's own
``ProxyHeadersMiddleware``, which ``serve``'s ``proxy_headers=True`` puts in front of the app.

Served as ``granian --interface asgi granian_app:app`` (lifespan included), one worker, uvloop.
What stays uvicorn's: ``serve``'s header deadline is its HTTP protocol
(``server/protocol.py``), so ``run.py`` gives granian its own, ``--http1-header-read-timeout``,
at the same ``CONNECTLINK_HEADER_TIMEOUT``; the body deadline is the app's under both.
"""

from __future__ import annotations

import logging.config

from connectlink.server.observe import logs, metrics_dir
from connectlink.settings import Settings

settings = Settings.from_env()
metrics_dir.prepare_directory(1)
logging.config.dictConfig(logs.log_config(settings.log_format or logs.default_format()))

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware  # noqa: E402

from connectlink.server.app import create_app  # noqa: E402  (after prepare_directory)

app = create_app(settings, whole_process=True)
if settings.forwarded_allow_ips.strip():
    app = ProxyHeadersMiddleware(app, trusted_hosts=settings.forwarded_allow_ips)
