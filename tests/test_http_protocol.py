"""The HTTP protocol `sync-service serve` runs: slow clients are cut off, handlers are not, and a response
arrives whole. A real uvicorn server on loopback, spoken to over raw sockets (a client library would not
trickle its bytes)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, HTTPScope, Receive, Send

from sync_service import http_protocol
from tests.support import serving

DEADLINE = 0.4  # seconds, for headers and for the body: short, so the tests are quick
HANDLER_SECONDS = 1.0  # longer than both deadlines together


async def _app(scope: HTTPScope, receive: Receive, send: Send) -> None:
    """/slow answers after HANDLER_SECONDS; anything else answers with the length of the body it read."""
    length = 0
    while True:
        message: Any = await receive()
        length += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(HANDLER_SECONDS)
    body = b"" if scope["method"] == "HEAD" else str(length).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 200, "headers": headers}
    await send(start)
    await send(HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=False))


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(http_protocol, "HEADER_TIMEOUT_SECONDS", DEADLINE)
    monkeypatch.setattr(http_protocol, "BODY_TIMEOUT_SECONDS", DEADLINE)
    with serving(_app, lifespan="off", timeout_keep_alive=30) as server:
        yield server.config.port


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed_after(
    sock: socket.socket, trickle: bytes = b"", every: float = 0.05, limit: float = 5.0
) -> float:
    """Send `trickle` a byte every `every` seconds (then nothing) until the server closes the connection;
    the seconds that took. Fails if the server answers anything, or has not closed within `limit`."""
    started = time.monotonic()
    sock.settimeout(every)
    for byte in [trickle[i : i + 1] for i in range(len(trickle))] + [b""] * int(limit / every):
        try:
            if byte:
                sock.sendall(byte)
            received = sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        assert received == b"", f"the server answered a client that never finished: {received!r}"
        return time.monotonic() - started
    pytest.fail(f"the connection was still open after {limit} s")


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response: its head (status line and headers) and its body (by content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head, body


def _ask(sock: socket.socket, request: bytes) -> bytes:
    """Send `request` (or its last part) and read the answer, which must be a 200; its body."""
    sock.sendall(request)
    head, body = _response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return body


def test_a_handler_slower_than_the_deadlines_answers_and_the_connection_stays_usable(port: int) -> None:
    with _connect(port) as sock:
        assert _ask(sock, b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello") == b"5"
        # Idle between requests for longer than a deadline: only the keep-alive timeout applies there.
        time.sleep(DEADLINE * 2)
        assert _ask(sock, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc") == b"3"


def test_each_request_on_a_connection_gets_its_own_full_deadline(port: int) -> None:
    with _connect(port) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")
            time.sleep(DEADLINE * 0.6)  # most of a deadline, three times: more than one deadline in all
            assert _ask(sock, b"\r\n") == b"0"


def test_a_request_trickled_on_a_reused_connection_is_cut_off_one_deadline_after_it_began(port: int) -> None:
    # (The deadlines themselves, at their real 10 s, are tested end to end through `sync-service serve` in
    # tests/reliability/test_security.py; this is the case where a timer set for an earlier request fires
    # before the current request's deadline and must wait for it.)
    with _connect(port) as sock:
        assert _ask(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") == b"0"
        time.sleep(DEADLINE / 2)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        assert DEADLINE * 0.8 <= _closed_after(sock, b"x-padding: " + b"a" * 200) <= DEADLINE + 2


def test_responses_arrive_whole_with_and_without_a_body(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd")
        head, body = _response(sock)
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
        assert b"content-type: text/plain" in head.lower()
        assert body == b"4"
        sock.sendall(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, "connection closed before the HEAD response"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert data.endswith(b"\r\n\r\n")
