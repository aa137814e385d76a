"""uvicorn's httptools protocol with deadlines for slow clients, a size budget for request heads, a
concurrency limit that idle sockets cannot use up, and one write per small response.

uvicorn only times out idle keep-alive connections. A client that connects and says nothing, trickles
its headers a line at a time or its body a byte at a time would hold a connection (and a request
slot) for as long as it likes. Here a new connection must send its first byte within
`FIRST_BYTE_TIMEOUT_SECONDS`; each request must deliver its headers within `HEADER_TIMEOUT_SECONDS` of
its first byte and its body within `BODY_TIMEOUT_SECONDS` after that; otherwise the connection is
closed. Handlers are not limited: the deadline is disarmed once the request has fully arrived. An idle
keep-alive connection between requests is left to uvicorn's keep-alive timeout.

Nothing in uvicorn limits the size of a request head, and httptools grows a header value (uvicorn the
URL) by concatenation each time a piece of it arrives, so one endless header costs quadratic CPU inside
a single `feed_data` call, where no deadline can fire (measured: 0.2 s at 8 MB, 15 s at 64 MB, the event
loop serving nothing). Here the bytes of each request head (request line and headers) are counted
before the parser sees them: past `HEADER_BUDGET_BYTES` the answer is 431 and the connection closes.
Head bytes are handed to the parser only up to the last complete line, so a value never reaches it in
pieces and its cost stays linear however the client trickles it.

uvicorn's `limit_concurrency` counts open connections as well as running requests, so a thousand
silent sockets made every request 503. Here the limit counts requests in progress only (those whose
head has arrived, until their response completes); sockets still sending a head, or idle between
requests, hold no slot: the deadlines and the header budget bound what they cost.

uvicorn writes a response's status line and headers as soon as the app starts the response, then the
body: two sends, each waking the client, for every response. Holding the headers back until the first
body write makes a small response one send (measured: about 10% more requests/s for a tiny GET).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

FIRST_BYTE_TIMEOUT_SECONDS = 5.0
HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 10.0
# Request line and all headers of one request. Ours are well under 8 KiB (a JWT, svix's three
# headers); browsers' cookies and proxies' forwarding headers are what the rest is for.
HEADER_BUDGET_BYTES = 64 * 1024
# After a 431 the client is usually still sending: closing at once would reset the connection, and a
# reset can destroy the 431 in the client's receive buffer before it reads it. So the write side is
# shut and what still arrives is read and dropped, unparsed, for this long (or this much) before the close.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024

_TOO_LARGE_BODY = b"request header fields too large"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _TOO_LARGE_BODY
)


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    # The deadline is a moment, checked by one timer per connection that is rescheduled only when it
    # fires early. Arming a fresh timer at every request's start and end (two timers and two cancels per
    # request) cost a few microseconds each; moving a float costs nothing.
    _deadline: float | None = None
    _timer: asyncio.TimerHandle | None = None
    _timer_at = 0.0
    # The head being received: True from the connection's start and from each request's end until the
    # next request's headers are complete. `_head_bytes` counts its bytes, `_held` keeps those after
    # its last line end, not yet given to the parser.
    _in_head = True
    _head_bytes = 0
    _held: bytearray | None = None
    _request_limit: int | None = None
    _refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own check (connections or tasks at the limit) is turned off; ours counts requests.
        self._request_limit, self.limit_concurrency = self.limit_concurrency, None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(FIRST_BYTE_TIMEOUT_SECONDS)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering after a 431: dropped unparsed
            self._head_bytes += len(data)
            if self._head_bytes > HEADER_BUDGET_BYTES + LINGER_BYTES and not self.transport.is_closing():
                self.transport.close()
            return
        if not self._in_head:
            super().data_received(data)  # a body (and whatever follows it in this piece)
            return
        self._unset_keepalive_if_required()  # the header deadline takes over from the keep-alive timer
        if self._deadline is None or self._head_bytes == 0:
            self._arm(HEADER_TIMEOUT_SECONDS)  # the first byte of a head: its headers are due from now
        while data and self._in_head and not self.transport.is_closing():
            room = HEADER_BUDGET_BYTES - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            held = self._held if self._held is not None else bytearray()
            lines_end = piece.rfind(b"\n") + 1
            if lines_end == 0:
                held += piece
                self._held = held
                continue
            complete = bytes(held) + piece[:lines_end] if held else piece[:lines_end]
            self._held = bytearray(piece[lines_end:]) or None
            super().data_received(complete)
            if not self._in_head and not self.transport.is_closing():
                # The head ended in `complete`: what is held and what is left are the body and beyond.
                rest = bytes(self._held or b"") + data
                self._held, data = None, b""
                if rest:
                    super().data_received(rest)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(HEADER_TIMEOUT_SECONDS)

    def on_headers_complete(self) -> None:
        self._in_head = False
        previous = self.cycle
        limit = self._request_limit
        if limit is not None and len(self.tasks) >= limit:
            self.logger.warning("Exceeded concurrency limit.")
            app, self.app = self.app, service_unavailable
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        if self.cycle is not previous and self.cycle is not None:
            # The cycle's ASGI task has not run yet: it will write through the wrapper from its start.
            _HeadersWithBody.install(self.cycle)
        self._arm(BODY_TIMEOUT_SECONDS)

    def on_message_complete(self) -> None:
        self._deadline = None
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        self._held = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def _refuse_head(self) -> None:
        """431 and close; or, with a response to an earlier request still being written on this
        connection (a pipelined head too large), just close once that response is done."""
        self._held = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self._refused = True
        self.transport.write(_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._arm(LINGER_SECONDS)  # the deadline's timer closes the connection then
        else:
            self.transport.close()

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
