"""Observability: request ids, log lines and metrics, around every request.

- ``asgi.py``: ``Observability``, the ASGI wrapper that gives each request its id (the
  ``X-Request-Id`` it sent when well formed, else a new one), returns that id on the response,
  writes the access log line and counts the request.
- ``logs.py``: the request id's context variable and the logging filter that reads it, the two
  line formats (text for a terminal, JSON for machines), and the queue that keeps writing them
  off the event loop (what ``connectlink serve`` configures).
- ``metrics.py``: the Prometheus metrics, one process's or every worker's (multiprocess mode);
  ``metrics_dir.py``: the directory that multiprocess mode needs, which ``serve`` prepares
  before anything imports prometheus_client (its mode is fixed at that import).
"""
