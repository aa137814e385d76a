"""The HTTP protocol `sync-service serve` runs: slow clients are cut off, handlers are not, a request head
past its budget is refused with 431, sockets that send nothing hold no request slot, and a response
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
from tests.helpers.support import serving

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
    monkeypatch.setattr(http_protocol, "FIRST_BYTE_TIMEOUT_SECONDS", DEADLINE)
    with serving(_app, lifespan="off", timeout_keep_alive=30) as server:
        yield server.config.port


LIMIT = 2  # requests in progress at once, for the limit tests


@pytest.fixture
def limited_port() -> Iterator[int]:
    with serving(_app, lifespan="off", timeout_keep_alive=30, limit_concurrency=LIMIT) as server:
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


def test_a_silent_connection_is_closed_at_the_first_byte_deadline(port: int) -> None:
    with _connect(port) as sock:
        assert DEADLINE * 0.8 <= _closed_after(sock) <= DEADLINE + 2


# --- the header budget ------------------------------------------------------------------------------

BUDGET = http_protocol.HEADER_BUDGET_BYTES
SEND_CAP = 16 * 1024 * 1024  # no flood in these tests sends more than this


def _refused(sock: socket.socket, flood: Iterator[bytes]) -> int:
    """Send `flood`'s pieces until the server answers (or SEND_CAP); the answer must be a 431 followed by
    the close. The bytes sent."""
    sent = 0
    sock.settimeout(0)
    answer = b""
    for piece in flood:
        if sent >= SEND_CAP:
            break
        try:
            answer += sock.recv(65536)
            break
        except BlockingIOError:
            pass
        try:
            sock.settimeout(5)
            sock.sendall(piece)
            sent += len(piece)
        except OSError:  # closed by the server while we were still sending
            break
        finally:
            sock.settimeout(0)
    sock.settimeout(5)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), (sent, answer[:200])
    assert b"connection: close" in answer.lower()
    return sent


def _endless_header() -> Iterator[bytes]:
    yield b"GET / HTTP/1.1\r\nhost: x\r\nx-endless: "
    while True:
        yield b"a" * 65536


def _many_headers() -> Iterator[bytes]:
    yield b"GET / HTTP/1.1\r\nhost: x\r\n"
    for n in range(100_000):
        yield b"".join(b"x-h-%d-%d: v\r\n" % (n, i) for i in range(200))


def _huge_request_line() -> Iterator[bytes]:
    yield b"GET /"
    while True:
        yield b"a" * 65536


@pytest.mark.parametrize(
    "flood",
    [_endless_header, _many_headers, _huge_request_line],
    ids=["endless-header", "many-headers", "request-line"],
)
def test_a_head_past_the_budget_is_431_and_closed(port: int, flood: Any) -> None:
    with _connect(port) as sock:
        sent = _refused(sock, flood())
    # The server stopped reading soon after the budget (what it drops while it lingers, and what the
    # sockets' buffers hold): nowhere near the cap.
    assert sent < SEND_CAP / 2, sent


def test_a_head_past_the_budget_in_one_piece_is_431(port: int) -> None:
    with _connect(port) as sock:
        _refused(sock, iter([b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (4 * BUDGET) + b"\r\n\r\n"]))


def test_every_request_on_a_keep_alive_connection_has_the_budget(port: int) -> None:
    with _connect(port) as sock:
        half = b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * (BUDGET // 2) + b"\r\n\r\n"
        for _ in range(3):  # heads on one connection adding up to more than one budget: all fine
            assert _ask(sock, half) == b"0"
        _refused(sock, _endless_header())


def test_a_head_just_under_the_budget_and_a_large_body_in_the_same_piece_are_answered(port: int) -> None:
    # The budget counts the head only: a body that arrives with it (here 1 MB in one send) is no part of it.
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n"
    padding = b"x-pad: " + b"a" * (BUDGET - len(head) - 200) + b"\r\n"
    with _connect(port) as sock:
        assert _ask(sock, head + padding + b"\r\n" + b"b" * 1_000_000) == b"1000000"


def test_pipelined_requests_in_one_piece_are_all_answered(port: int) -> None:
    request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
    with _connect(port) as sock:
        sock.sendall(request * 3)
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 3:  # (they may arrive in one piece: _response would drop two)
            chunk = sock.recv(65536)
            assert chunk, f"closed after {data!r}"
            data += chunk
        assert data.count(b"\r\n\r\n3") == 3


def test_a_head_trickled_a_byte_at_a_time_is_answered(port: int) -> None:
    # Every byte its own piece: the parser is fed whole lines, whatever the pieces.
    with _connect(port) as sock:
        for byte in b"GET / HTTP/1.1\r\nhost: x\r\nx-a: bcd\r\n":
            sock.sendall(bytes([byte]))
        assert _ask(sock, b"\r\n") == b"0"


# --- the concurrency limit --------------------------------------------------------------------------


def test_connections_that_send_nothing_hold_no_request_slot(limited_port: int) -> None:
    silent = [_connect(limited_port) for _ in range(LIMIT * 10)]
    try:
        with _connect(limited_port) as sock:
            assert _ask(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") == b"0"
    finally:
        for sock in silent:
            sock.close()


def test_idle_keep_alive_connections_hold_no_request_slot(limited_port: int) -> None:
    idle = [_connect(limited_port) for _ in range(LIMIT * 3)]
    try:
        for sock in idle:
            assert _ask(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") == b"0"
        with _connect(limited_port) as sock:
            assert _ask(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") == b"0"
        for sock in idle:  # and they are still open, usable
            assert _ask(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") == b"0"
    finally:
        for sock in idle:
            sock.close()


def test_requests_in_progress_past_the_limit_are_503(limited_port: int) -> None:
    busy = [_connect(limited_port) for _ in range(LIMIT)]
    try:
        for sock in busy:
            sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(HANDLER_SECONDS / 4)  # both handlers running
        with _connect(limited_port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            head, _ = _response(sock)
            assert head.startswith(b"HTTP/1.1 503"), head
        for sock in busy:
            head, _ = _response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK"), head
    finally:
        for sock in busy:
            sock.close()
