"""Log lines: text for a terminal, one JSON object a line for machines, each carrying the id of
the request it was written for; and written by a thread of their own, through a queue, so that a
slow terminal or a full pipe never holds up the event loop.

``connectlink serve`` hands ``log_config(format)`` to uvicorn, which applies it in every worker
process: the ``connectlink`` and ``uvicorn`` loggers write through one ``QueuedHandler``, which
only puts each record on a bounded queue (formatting happens on the listener's thread; a record
that finds the queue full is dropped and counted, and the count is logged once there is room).
At the app's shutdown the queue is drained and the handler writes directly from then on
(``drain``): a worker may end by a signal, which runs no exit handler.
Without that configuration (a test's server, an app in someone else's process) nothing here is
installed: records go wherever that process sends them, the filter and formatters are there to
be used.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from contextvars import ContextVar
from logging.handlers import QueueHandler, QueueListener
from typing import Any, NamedTuple, TextIO

from connectlink import jsonio, text

FORMATS = ("text", "json")
MAX_QUEUED = 10_000  # records waiting for the writer; past that they are dropped, and counted
WRITE_EVERY = 0.25  # seconds between the writer's looks at the queue
_HANDLER = "connectlink.server.observe.logs.queued_stderr"
LOGGERS = ("connectlink", "uvicorn")  # what a serving process writes through the queue

# The id of the request being served on this task; None outside any request.
REQUEST_ID: ContextVar[str | None] = ContextVar("connectlink_request_id", default=None)
ACCESS_LOGGER = "connectlink.access"


class Access(NamedTuple):
    """One request, as the event loop hands it to the writer for the access log: a tuple, made
    in about a microsecond; the writer's thread makes the line (``line``). Made into a
    ``LogRecord`` on the loop instead, each request cost GET link a fifth of its throughput
    under ``make bench``."""

    created: float  # time.time()
    request_id: str | None
    client: str  # the peer's address, "-" if unknown
    method: str
    path: str  # as requested: ``line`` bounds and escapes it (``text.for_log``)
    status: int
    ms: float
    operation: str | None
    retailer_id: int | None

    def line(self) -> tuple[str, dict[str, Any]]:
        """The message and the fields of its log line: never the query string, the headers or
        the body (any may carry a credential), and the path as ``text.for_log`` has it."""
        path = text.for_log(self.path)
        fields: dict[str, Any] = {
            "client": self.client, "method": self.method, "path": path, "status": self.status,
            "latency_ms": round(self.ms, 2), "operation": self.operation,
        }
        if self.retailer_id is not None:
            fields["retailer_id"] = self.retailer_id
        message = (f'{self.client} "{self.method} {path}" {self.status} {self.ms:.1f}ms '
                   f'{self.operation or "-"}'
                   + ("" if self.retailer_id is None else f" retailer {self.retailer_id}"))
        return message, fields


class RequestIdFilter(logging.Filter):
    """Notes the current request's id on each record (``record.request_id``), in the thread
    that logs it: the only one where the request's context is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, ``request_id``
    (within a request), ``pid``, the record's ``fields`` (the access log's: method, path, status,
    latency_ms, operation, retailer_id...) and ``exception`` (a traceback) if any."""

    def __init__(self) -> None:
        super().__init__()
        self._second, self._stamp = -1, ""  # the last second formatted, and its text

    def timestamp(self, created: float) -> str:
        """``2026-12-01T22:11:00.123Z`` (the date and time formatted once a second)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.timestamp(record.created), "level": record.levelname,
            "logger": record.name, "message": record.getMessage(), "pid": record.process,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return jsonio.encode(line).decode()

    def access(self, entry: Access) -> str:
        """The line ``format`` makes of the access-log record ``entry`` stands for."""
        message, fields = entry.line()
        line: dict[str, Any] = {
            "time": self.timestamp(entry.created), "level": "INFO", "logger": ACCESS_LOGGER,
            "message": message, "pid": os.getpid(),
        }
        if entry.request_id is not None:
            line["request_id"] = entry.request_id
        line.update(fields)
        return jsonio.encode(line).decode()


class TextFormatter(logging.Formatter):
    """``2026-12-01 22:11:00,123 INFO connectlink.access [<request id>] <message>``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)

    def access(self, entry: Access) -> str:
        """The line ``format`` makes of the access-log record ``entry`` stands for."""
        record = logging.makeLogRecord({"name": ACCESS_LOGGER, "levelno": logging.INFO,
                                        "levelname": "INFO", "msg": entry.line()[0],
                                        "created": entry.created,
                                        "msecs": (entry.created % 1) * 1000,
                                        "request_id": entry.request_id})
        return self.format(record)


class QueuedHandler(QueueHandler):
    """Puts records on the queue as they are, never waiting: the listener's thread formats
    and writes them. Once drained (``drain``: at the app's shutdown; ``close``: at exit) it
    writes each record itself, at once."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | Access | None],
                 writer: Writer | None = None, listener: Listener | None = None,
                 limit: int = MAX_QUEUED) -> None:
        super().__init__(records)
        self.records = records
        self.writer = writer
        self.listener = listener
        self.limit = limit
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stock prepare formats the message here, on the event loop; the records stay in
        # this process, so they can travel as they are.
        return record

    def emit(self, record: logging.LogRecord) -> None:
        if self.listener is None and self.writer is not None:
            self.writer.handle(record)
            self.writer.flush()
        else:
            self.enqueue(record)

    def access(self, entry: Access) -> None:
        """An access-log line (``observe/asgi.py``), by the same way as a record."""
        if self.listener is None and self.writer is not None:
            self.writer.access(entry)
            self.writer.flush()
        else:
            self.enqueue(entry)

    def enqueue(self, record: logging.LogRecord | Access) -> None:
        # A SimpleQueue: no lock of Python's to take, and no limit of its own, so one here.
        if self.records.qsize() >= self.limit:
            self.dropped += 1
            return
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self.records.put(logging.makeLogRecord({
                "name": "connectlink.logs", "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": "%d log lines were dropped: whatever reads this log fell behind",
                "args": (dropped,),
            }))
        self.records.put(record)

    def drain(self) -> None:
        """Write what is queued, and every record from now on as it comes."""
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    def close(self) -> None:
        self.drain()
        super().close()


def queued_access() -> QueuedHandler | None:
    """The queued handler that every access-log record goes to and nowhere else, when the
    serving process is configured so (``log_config``); None otherwise (a test's server, an app
    in someone else's process), where access lines go as records, wherever that process says."""
    logger = logging.getLogger(ACCESS_LOGGER)
    parent = logger.parent
    if (logger.handlers or logger.filters or not logger.propagate or parent is None
            or parent.name != "connectlink" or parent.propagate or parent.filters
            or not logger.isEnabledFor(logging.INFO)):
        return None
    handlers = parent.handlers
    if len(handlers) == 1 and isinstance(handlers[0], QueuedHandler):
        return handlers[0]
    return None


def drain() -> None:
    """At the app's shutdown: write every queued line now, and each later one as it comes
    (what is still queued when a process is ended by a signal is lost)."""
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, QueuedHandler):
                handler.drain()


class Writer(logging.StreamHandler[TextIO]):
    """Formats each record as it comes and writes the lines in batches, on ``flush``: one
    write, not one a line (stderr flushes at every line break it is given)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pending.append(self.format(record))
        except Exception:
            self.handleError(record)

    def access(self, entry: Access) -> None:
        made = self.formatter
        assert isinstance(made, JsonFormatter | TextFormatter)
        self.pending.append(made.access(entry))

    def flush(self) -> None:
        self.acquire()
        try:
            if self.pending:
                batch, self.pending = "\n".join(self.pending) + "\n", []
                self.stream.write(batch)
                self.stream.flush()
        except Exception:  # a closed or broken stream: nothing more to be done from here
            self.handleError(logging.makeLogRecord({"msg": "log lines lost"}))
        finally:
            self.release()


class Listener(QueueListener):
    """The writing thread. It looks at the queue every ``WRITE_EVERY`` seconds, not at each
    record, so that a request's put never has to wake a thread (a system call, and a fight
    for the GIL): each look writes everything queued since the last one in one batch."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | Access | None],
                 writer: Writer) -> None:
        super().__init__(records, writer)
        self.records = records
        self.writer = writer
        self.stopping = threading.Event()

    def handle(self, record: logging.LogRecord | Access) -> None:
        if isinstance(record, Access):
            self.writer.access(record)
        else:
            super().handle(record)

    def dequeue(self, block: bool) -> logging.LogRecord | Access | None:  # type: ignore[override]
        while True:
            try:
                return self.records.get_nowait()
            except queue.Empty:
                self.writer.flush()
                self.stopping.wait(WRITE_EVERY)

    def enqueue_sentinel(self) -> None:
        self.records.put(None)
        self.stopping.set()

    def stop(self) -> None:
        super().stop()  # the thread has written everything before the sentinel
        self.writer.flush()


def formatter(format: str) -> logging.Formatter:
    if format not in FORMATS:
        raise ValueError(f"unknown log format {format!r} (text or json)")
    return JsonFormatter() if format == "json" else TextFormatter()


def queued_stderr(format: str = "text") -> QueuedHandler:
    """A handler whose records are written to stderr, in ``format``, by a thread of its own
    (the ``()`` factory of ``log_config``)."""
    writer = Writer(sys.stderr)
    writer.setFormatter(formatter(format))
    records: queue.SimpleQueue[logging.LogRecord | Access | None] = queue.SimpleQueue()
    listener = Listener(records, writer)
    handler = QueuedHandler(records, writer, listener)
    handler.addFilter(RequestIdFilter())
    listener.start()
    return handler


def default_format(stderr: Any = None) -> str:
    """Text for a person at a terminal, JSON for anything else (a pipe, a file, a collector)."""
    stream = sys.stderr if stderr is None else stderr
    return "text" if stream.isatty() else "json"


def log_config(format: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a serving process: ConnectLink's and uvicorn's
    loggers, at INFO, through one queued handler; uvicorn's own access log off (ours replaces
    it, and leaves out query strings)."""
    formatter(format)  # refuse an unknown one here, not in every worker
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"queued": {"()": _HANDLER, "format": format}},
        "loggers": {
            **{name: {"handlers": ["queued"], "level": "INFO", "propagate": False}
               for name in LOGGERS},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
