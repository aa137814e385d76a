"""uvicorn's httptools protocol with deadlines for slow clients.

uvicorn only times out idle keep-alive connections. A client that connects and says nothing, trickles
its headers a line at a time or its body a byte at a time would hold a connection (and a request
slot) for as long as it likes. Here each request must deliver its headers within
`HEADER_TIMEOUT_SECONDS` of its first byte (or of the connection opening) and its body within
`BODY_TIMEOUT_SECONDS` after that; otherwise the connection is closed. Handlers are not limited: the
deadline is disarmed once the request has fully arrived.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 10.0


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(HEADER_TIMEOUT_SECONDS)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(HEADER_TIMEOUT_SECONDS)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(BODY_TIMEOUT_SECONDS)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._drop)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _drop(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
