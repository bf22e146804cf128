"""A loopback TCP proxy the fault tests put between the suite and PostgreSQL or NATS, to break the
network the way real outages do: `cut()` drops every connection and refuses new ones (what clients
see while a server restarts), `pause()` stops forwarding bytes without closing anything (a network
partition: the peer is silent), `restore()` heals. It runs its own event loop in a thread so
synchronous tests and subprocesses can use it alike."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from shared.nats_server import free_port


class FaultyLink:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name=f"netproxy-{self.port}"
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._refusing = False

    # --- control (from any thread) ---------------------------------------------------------------

    def start(self) -> FaultyLink:
        self._thread.start()
        self._call(self._listen())
        self._loop.call_soon_threadsafe(self._flowing.set)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._close_all(stop_listening=True))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def cut(self) -> None:
        """Drop every connection and refuse new ones (the server is restarting)."""
        self._refusing = True
        self._call(self._close_all(stop_listening=False))

    def pause(self) -> None:
        """Hold every byte in both directions; connections stay open (a silent network)."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def restore(self) -> None:
        self._refusing = False
        self._loop.call_soon_threadsafe(self._flowing.set)

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # --- the proxy ---------------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _close_all(self, *, stop_listening: bool) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()
        if stop_listening and self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, upstream_writer})
        pipes = [
            asyncio.ensure_future(self._pipe(reader, upstream_writer)),
            asyncio.ensure_future(self._pipe(upstream_reader, writer)),
        ]
        # When either side goes (closed, reset, killed), the other must see its peer go too: a
        # server holding a dead client's transaction open would be no real outage.
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for end in (writer, upstream_writer):
            self._writers.discard(end)
            with contextlib.suppress(Exception):
                end.transport.abort()
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
