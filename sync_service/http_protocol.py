"""uvicorn's httptools protocol with deadlines for slow clients and one write per small response.

uvicorn only times out idle keep-alive connections. A client that connects and says nothing, trickles
its headers a line at a time or its body a byte at a time would hold a connection (and a request
slot) for as long as it likes. Here each request must deliver its headers within
`HEADER_TIMEOUT_SECONDS` of its first byte (or of the connection opening) and its body within
`BODY_TIMEOUT_SECONDS` after that; otherwise the connection is closed. Handlers are not limited: the
deadline is disarmed once the request has fully arrived.

uvicorn writes a response's status line and headers as soon as the app starts the response, then the
body: two sends, each waking the client, for every response. Holding the headers back until the first
body write makes a small response one send (measured: about 10% more requests/s for a tiny GET).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 10.0


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    # The deadline is a moment, checked by one timer per connection that is rescheduled only when it
    # fires early. Arming a fresh timer at every request's start and end (two timers and two cancels per
    # request) cost a few microseconds each; moving a float costs nothing.
    _deadline: float | None = None
    _timer: asyncio.TimerHandle | None = None
    _timer_at = 0.0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(HEADER_TIMEOUT_SECONDS)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(HEADER_TIMEOUT_SECONDS)

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous and self.cycle is not None:
            # The cycle's ASGI task has not run yet: it will write through the wrapper from its start.
            _HeadersWithBody.install(self.cycle)
        self._arm(BODY_TIMEOUT_SECONDS)

    def on_message_complete(self) -> None:
        self._deadline = None
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        if self._timer is None or self._deadline < self._timer_at:
            self._schedule(self._deadline)

    def _schedule(self, moment: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self.loop.call_at(moment, self._check), moment

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None:
            return  # disarmed: the next _arm schedules a timer again
        if self.loop.time() < self._deadline:
            self._schedule(self._deadline)  # re-armed since this timer was set: wait for the new moment
        elif not self.transport.is_closing():
            self.transport.close()


class _HeadersWithBody:
    """The transport as one request/response cycle sees it: the write of the status line and headers
    is held and sent with the first body write, or when the response completes without one (HEAD, an
    empty body), or before anything else the cycle does with the transport (closing it, say). Writes
    before the response starts (`100 Continue`) go at once."""

    __slots__ = ("_cycle", "_held", "_on_response", "_transport")

    @classmethod
    def install(cls, cycle: RequestResponseCycle) -> None:
        writer = cls(cycle)
        cycle.transport = writer  # type: ignore[assignment]
        cycle.on_response = writer._response_complete

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._transport: asyncio.Transport = cycle.transport
        self._cycle: RequestResponseCycle | None = cycle
        self._on_response = cycle.on_response
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._cycle is not None and self._cycle.response_started:
            self._cycle = None  # only the response's first write is held; and no reference cycle
            self._held = data
            return
        self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        self._flush()
        return getattr(self._transport, name)

    def _response_complete(self) -> None:
        self._flush()
        self._on_response()

    def _flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)
