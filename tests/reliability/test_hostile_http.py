"""HTTP-level floods against `python -m sync_service serve` (its own process, `--limit-concurrency` at its
default), next to genuine signed deliveries, which must still be answered promptly:

- request heads past the budget (an endless header trickled in 64 KiB pieces, many headers, a huge
  request line), each answered 431 and closed, from a few connections at once, over and over;
- 1,200 connections that send nothing, re-opened as the server closes them.

Every flood is bounded in connections, bytes and seconds. The latencies are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import select
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from selectors import EVENT_READ

import httpx
import pytest

from sync_service import http_protocol
from tests.helpers.support import deliver, envelope, user_data
from tests.reliability.cli_service import ServedByCli, serve_with_cli

SILENT_CONNECTIONS = 1200  # more than the default --limit-concurrency of 1000
PROMPT_SECONDS = 2.0  # a generous bound: unloaded, a delivery takes a few milliseconds
FLOOD_SECONDS = 8.0  # how long each flood runs next to the genuine deliveries
HEAD_FLOOD_CAP = 32 * 1024 * 1024  # bytes one flooding connection sends at most (unrefused, 4 s of parsing)


def _enough_file_descriptors(needed: int) -> None:
    """The flood's sockets here and in the server (which inherits this limit) must fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture(scope="module")
def cli(migrated_database_url: str) -> Iterator[ServedByCli]:
    _enough_file_descriptors(SILENT_CONNECTIONS * 2 + 512)
    with serve_with_cli(migrated_database_url) as served:
        yield served


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _genuine_traffic(base_url: str, seconds: float) -> tuple[list[float], list[int]]:
    """Signed deliveries and /health/live, one after the other for `seconds` (at most 200 of each): the
    latency of each delivery and the status of everything."""
    latencies: list[float] = []
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for _ in range(200):
            if time.monotonic() >= deadline:
                break
            started = time.monotonic()
            response = await deliver(client, envelope(user_data()))
            latencies.append(time.monotonic() - started)
            statuses.append(response.status_code)
            statuses.append((await client.get("/health/live")).status_code)
            await asyncio.sleep(0.1)
    return latencies, statuses


def _report(label: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    return (
        f"{label}: {len(ordered)} deliveries, median {statistics.median(ordered) * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms"
    )


# --- request heads past the budget ------------------------------------------------------------------


@dataclass
class HeadFlood:
    """One connection after another sending an oversized head, until `stop`; what each got back."""

    name: str
    pieces: Callable[[], Iterator[bytes]]
    answers: list[bytes] = field(default_factory=list)
    closed: list[bool] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)


def _endless_header() -> Iterator[bytes]:
    yield b"POST /webhooks/better-auth HTTP/1.1\r\nHost: x\r\nX-Endless: "
    while True:
        yield b"a" * 65536


def _many_headers() -> Iterator[bytes]:
    yield b"POST /webhooks/better-auth HTTP/1.1\r\nHost: x\r\n"
    for n in range(100_000):
        yield b"".join(b"X-H-%d-%d: v\r\n" % (n, i) for i in range(1000))


def _huge_request_line() -> Iterator[bytes]:
    yield b"GET /health/live?"
    while True:
        yield b"a" * 65536


def _run_head_flood(port: int, flood: HeadFlood, stop: threading.Event) -> None:
    for _ in range(100):
        if stop.is_set():
            return
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sent, answer = 0, b""
            for piece in flood.pieces():
                if sent >= HEAD_FLOOD_CAP or select.select([sock], [], [], 0)[0]:
                    break  # an answer has come: stop sending
                try:
                    sock.sendall(piece)
                except OSError:
                    break
                sent += len(piece)
            closed = False
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    answer += chunk
                closed = True  # the server closed it (a reset counts too: see the suppress)
            flood.answers.append(answer[:200])
            flood.closed.append(closed)
            flood.sent.append(sent)


@pytest.mark.slow
async def test_oversized_heads_are_431_and_genuine_deliveries_stay_prompt(cli: ServedByCli) -> None:
    before = _rss_mb(cli.process.pid)
    calm, statuses = await _genuine_traffic(cli.base_url, 1.0)
    assert set(statuses) == {200}
    floods = [HeadFlood(f"endless-header-{n}", _endless_header) for n in range(4)]
    floods += [HeadFlood("many-headers", _many_headers), HeadFlood("request-line", _huge_request_line)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=_run_head_flood, args=(cli.port, flood, stop), daemon=True)
        for flood in floods
    ]
    for thread in threads:
        thread.start()
    try:
        await asyncio.sleep(0.2)  # the floods under way
        latencies, statuses = await _genuine_traffic(cli.base_url, FLOOD_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
    after = _rss_mb(cli.process.pid)
    print(f"\n{_report('before the floods', calm)}")
    print(_report("during the header floods", latencies))
    for flood in floods:
        print(f"  {flood.name}: {len(flood.answers)} connections, at most {max(flood.sent)} bytes sent")
    print(f"  server RSS {before:.0f} MB before, {after:.0f} MB after")

    assert set(statuses) == {200}, statuses
    assert max(latencies) < PROMPT_SECONDS, _report("during the header floods", latencies)
    for flood in floods:
        assert len(flood.answers) >= 3, flood.name  # each flood really went on
        for answer in flood.answers:
            assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), (
                flood.name,
                answer,
            )
        assert all(flood.closed), flood.name
        # Refused after the budget, not after the cap: what the server read past the budget and the
        # sockets' buffers held.
        assert max(flood.sent) < HEAD_FLOOD_CAP, flood.name
    assert after - before < 100, (before, after)


# --- silent connections -----------------------------------------------------------------------------


def _run_silent_flood(
    port: int, stop: threading.Event, ready: threading.Event, opened: list[int], reopened: list[int]
) -> None:
    """Keep SILENT_CONNECTIONS connections open and saying nothing, re-opening each the server closes,
    until `stop` (and at most FLOOD_SECONDS * 2)."""
    deadline = time.monotonic() + FLOOD_SECONDS * 2
    # (A selector, not select(): the sockets' descriptors go past select's 1024.)
    with selectors.DefaultSelector() as selector:
        try:
            for _ in range(SILENT_CONNECTIONS):
                selector.register(socket.create_connection(("127.0.0.1", port), timeout=10), EVENT_READ)
            opened.append(len(selector.get_map()))
            ready.set()
            while not stop.is_set() and time.monotonic() < deadline:
                for key, _ in selector.select(0.2):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    with contextlib.suppress(OSError):
                        if sock.recv(1) != b"":
                            continue  # (the server never answers a silent socket; if it did, keep it)
                    selector.unregister(sock)
                    sock.close()
                    selector.register(socket.create_connection(("127.0.0.1", port), timeout=10), EVENT_READ)
                    reopened[0] += 1
        finally:
            ready.set()
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]


@pytest.mark.slow
async def test_silent_connections_past_the_limit_do_not_make_genuine_requests_503(cli: ServedByCli) -> None:
    stop, ready = threading.Event(), threading.Event()
    opened: list[int] = []
    reopened = [0]
    thread = threading.Thread(
        target=_run_silent_flood, args=(cli.port, stop, ready, opened, reopened), daemon=True
    )
    started = time.monotonic()
    thread.start()
    try:
        await asyncio.to_thread(ready.wait, 30)
        assert opened == [SILENT_CONNECTIONS], "the flood could not open its connections"
        print(f"\n{SILENT_CONNECTIONS} silent connections open after {time.monotonic() - started:.2f} s")
        # Long enough for the first-byte deadline to close them all and the flood to re-open them.
        latencies, statuses = await _genuine_traffic(
            cli.base_url, http_protocol.FIRST_BYTE_TIMEOUT_SECONDS + 3
        )
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    print(_report("during the silent flood", latencies))
    print(f"  silent connections closed by the server and re-opened: {reopened[0]}")
    assert statuses.count(200) == len(statuses), f"{len(statuses) - statuses.count(200)} not 200: {statuses}"
    assert max(latencies) < PROMPT_SECONDS, _report("during the silent flood", latencies)
    # The first-byte deadline closed the silent ones (and their replacements were counted).
    assert reopened[0] >= SILENT_CONNECTIONS
