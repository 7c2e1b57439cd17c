"""A TCP proxy that a test can cut: every connection dropped and new ones refused, until
restored. It stands between a server and its PostgreSQL to stage an outage without touching
the database server itself.

It notes, on ``time.monotonic()``, when each cut and restore began and was done, and when it
accepted each connection: a test orders the answers it got against what really happened to the
database's connections, instead of guessing from its own schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.cut_started: float | None = None  # the last cut: no connection served after it
        self.cut_done: float | None = None  # every connection dropped, none accepted
        self.restore_started: float | None = None  # the last restore: listening from here on
        self.restored: float | None = None
        self.accepted: list[float] = []  # when each connection was accepted
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    def restore(self) -> None:
        """Listen again: new connections reach the database."""

        async def listen() -> None:
            self.restore_started = time.monotonic()
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True)
            self.restored = time.monotonic()

        self._call(listen())

    def cut(self) -> None:
        """Refuse new connections and drop every open one, mid-query if need be."""

        async def cut() -> None:
            self.cut_started = time.monotonic()
            if self._server is not None:
                self._server.close()
                self._server = None
            for transport in list(self._transports):
                transport.abort()
            self._transports.clear()
            self.cut_done = time.monotonic()

        self._call(cut())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = [writer.transport, upstream_writer.transport]
        self._transports.update(pair)
        await asyncio.gather(self._pipe(reader, upstream_writer),
                             self._pipe(upstream_reader, writer))
        for transport in pair:
            self._transports.discard(transport)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
