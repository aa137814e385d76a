"""`sync-service replay`: both sources, both targets, dry runs, failures and re-runs, exit codes.

Real PostgreSQL, the real service on a loopback port, svix's own signer and verifier. Most tests run the
replay in-process (`resolve` + `run`, exactly what the CLI calls after parsing); a few run the real
command in a subprocess for the entry points, migrations, stdin and exit statuses.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from svix.webhooks import Webhook

from sync_service.cli import _parser, main
from sync_service.replay import sources as replay_sources
from sync_service.replay.command import run
from sync_service.replay.options import resolve
from tests.helpers.support import (
    SECRET,
    ServiceUnderTest,
    deliver,
    envelope,
    iso,
    make_settings,
    start_service,
    user_data,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "better-auth-1.7.25-deliveries.jsonl"
NATIVE_ID = "1AJsC9tjCvQhaPByLqNsbmK6D3Kqenrv"  # opaque (non-UUID) id in the Better Auth fixtures


async def replay(
    capsys: pytest.CaptureFixture[str], database_url: str, *argv: str, **env: str
) -> tuple[int, dict[str, Any], str]:
    """Run `sync-service replay ARGV --json` in-process; returns (exit status, summary, stderr)."""
    args = _parser().parse_args(["replay", *argv, "--json"])
    code = await run(resolve(args, make_settings(database_url, **env)))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def write_lines(path: Path, *lines: Any) -> Path:
    """Each item is written as JSON, or as is when it is already a str (for malformed lines)."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text)
    return path


def outcomes(summary: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in summary["outcomes"].items() if v}


async def users(db: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM users")
    return {row["id"]: dict(row) for row in rows}


def moments(count: int) -> list[datetime]:
    start = datetime.now(UTC) - timedelta(minutes=10)
    return [start + timedelta(seconds=i) for i in range(count)]


# --- file source, --direct ------------------------------------------------------------------------


async def test_file_of_payloads_and_deliveries_is_applied_directly(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob, carol = user_data(name="Alice"), user_data(name="Bob"), user_data(name="Carol")
    source = write_lines(
        tmp_path / "events.jsonl",
        envelope(alice),  # a bare payload
        {"id": "msg_bob", "payload": envelope(bob)},  # a delivery
        {"note": "exported by hand", "payload": envelope(carol)},  # a delivery without an id
        "",  # blank lines are skipped
        envelope({"id": alice["id"]}, "session.created"),  # a type the service ignores
        envelope({"id": carol["id"]}, "user.deleted"),  # deletions go through the same core
    )
    code, summary, _ = await replay(capsys, migrated_database_url, str(source), "--direct")

    assert code == 0
    assert outcomes(summary) == {"applied": 4, "ignored": 1}
    rows = await users(db)
    assert {row["name"] for row in rows.values()} == {"Alice", "Bob"}
    assert await db.fetchval("SELECT id FROM deleted_users") == carol["id"]
    assert rows[bob["id"]]["email"] == bob["email"]
    ids = {r["message_id"] for r in await db.fetch("SELECT message_id FROM webhook_events")}
    assert len(ids) == 5
    assert "msg_bob" not in ids  # without --keep-ids every event gets a payload-derived id
    assert all(i.startswith("rpl_") for i in ids)


async def test_keep_ids_uses_the_deliveries_own_ids(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare, kept = user_data(), user_data()
    source = write_lines(
        tmp_path / "e.jsonl", envelope(bare), {"id": "msg_kept_1", "payload": envelope(kept)}
    )
    code, summary, _ = await replay(capsys, migrated_database_url, str(source), "--direct", "--keep-ids")

    assert (code, outcomes(summary)) == (0, {"applied": 2})
    events = {r["message_id"]: r["user_id"] for r in await db.fetch("SELECT * FROM webhook_events")}
    assert events["msg_kept_1"] == kept["id"]
    assert len(events) == 2  # the bare payload had no id of its own: it got a derived one


async def test_replaying_the_same_file_twice_changes_no_row(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = moments(3)
    alice = user_data(created=t[0])
    source = write_lines(
        tmp_path / "events.jsonl",
        envelope(alice),
        envelope({**alice, "name": "Alice B", "updatedAt": iso(t[1])}, "user.updated"),
        envelope(user_data(created=t[2])),
        envelope({"id": alice["id"]}, "session.created"),
        envelope(user_data(user_id="not-a-uuid")),  # rejected, and stays so
    )
    snapshot = "SELECT xmin::text AS version, * FROM {} ORDER BY 2"

    code, first, _ = await replay(capsys, migrated_database_url, str(source), "--direct")
    assert (code, outcomes(first)) == (1, {"applied": 3, "ignored": 1, "rejected": 1})
    users_before = await db.fetch(snapshot.format("users"))
    events_before = await db.fetch(snapshot.format("webhook_events WHERE status <> 'rejected'"))

    code, second, _ = await replay(capsys, migrated_database_url, str(source), "--direct")
    assert (code, outcomes(second)) == (1, {"duplicate": 4, "rejected": 1})
    # xmin changes whenever PostgreSQL writes a row version: equal snapshots mean nothing was rewritten.
    assert await db.fetch(snapshot.format("users")) == users_before
    assert await db.fetch(snapshot.format("webhook_events WHERE status <> 'rejected'")) == events_before

    code, third, _ = await replay(capsys, migrated_database_url, str(source), "--direct", "--random-ids")
    assert outcomes(third) == {"stale": 3, "ignored": 1, "rejected": 1}  # evaluated again, still no change
    assert await db.fetch(snapshot.format("users")) == users_before


async def test_older_events_after_newer_ones_leave_the_newest(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = moments(3)
    created = user_data(name="v1", created=t[0])
    newest = {**created, "name": "v3", "updatedAt": iso(t[2])}
    source = write_lines(
        tmp_path / "events.jsonl",
        envelope(newest, "user.updated"),
        envelope({**created, "name": "v2", "updatedAt": iso(t[1])}, "user.updated"),
        envelope(created),
    )
    code, summary, _ = await replay(capsys, migrated_database_url, str(source), "--direct")

    assert (code, outcomes(summary)) == (0, {"applied": 1, "stale": 2})
    row = (await users(db))[created["id"]]
    assert (row["name"], row["updated_at"]) == (
        "v3",
        t[2].replace(microsecond=t[2].microsecond // 1000 * 1000),
    )


async def test_malformed_lines_are_reported_by_number_and_the_run_goes_on(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [user_data() for _ in range(3)]
    source = write_lines(
        tmp_path / "events.jsonl",
        envelope(good[0]),
        "{this is not json",
        envelope(good[1]),
        '["an", "array"]',
        {"id": 42, "payload": envelope(user_data())},
        {"payload": "not an object"},
        envelope(good[2]),
    )
    failed_out = tmp_path / "failed.jsonl"
    code, summary, err = await replay(
        capsys, migrated_database_url, str(source), "--direct", "--failed-out", str(failed_out)
    )

    assert code == 1
    assert outcomes(summary) == {"applied": 3, "failed": 4}
    assert summary["invalid_lines"] == 4
    positions = [p["position"] for p in summary["problems"]]
    assert positions == ["line 2", "line 4", "line 5", "line 6"]
    assert "line 2: failed: not valid JSON" in err
    assert "line 4: failed: not a JSON object" in err
    assert "line 5: failed: id must be a string" in err
    assert "line 6: failed: payload must be a JSON object" in err
    assert set(await users(db)) == {u["id"] for u in good}
    # Every line that did not go through is in the re-run file as it was read, in input order.
    source_lines = source.read_text().splitlines()
    assert failed_out.read_text().splitlines() == [source_lines[i] for i in (1, 3, 4, 5)]


async def test_hostile_lines_are_reported_escaped_and_the_valid_ones_of_their_chunk_apply(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [user_data() for _ in range(2)]
    deep = "[" * 100_000
    source = write_lines(
        tmp_path / "events.jsonl",
        envelope(good[0]),
        '{"x": ' + deep,
        {"id": "evil\n\u001b[31mred", "payload": envelope(user_data(email="not an email"))},
        envelope(good[1]),
    )
    failed_out = tmp_path / "failed.jsonl"
    code, summary, err = await replay(
        capsys, migrated_database_url, str(source), "--direct", "--keep-ids", "--failed-out", str(failed_out)
    )
    assert code == 1
    assert set(await users(db)) == {u["id"] for u in good}  # the deep line did not stop its chunk
    assert outcomes(summary) == {"applied": 2, "failed": 2}  # the hostile id is no message id either
    assert "\x1b" not in err  # no escape sequence reaches the terminal
    assert "id evil\\n\\x1b[31mred" in err  # shown escaped, on one line
    assert len(failed_out.read_text().splitlines()) == 2


# --- failed-out round trip -------------------------------------------------------------------------


async def test_failed_out_reruns_after_fixing_the_setting(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Better Auth's real payloads: its native ids are rejected under USER_ID_FORMAT=uuid, written to the
    failed file, and applied when that file is replayed with USER_ID_FORMAT=opaque."""
    failed_out = tmp_path / "failed.jsonl.gz"
    code, first, err = await replay(
        capsys, migrated_database_url, str(FIXTURES), "--direct", "--failed-out", str(failed_out),
        USER_ID_FORMAT="uuid",
    )  # fmt: skip
    assert code == 1
    assert outcomes(first) == {"applied": 6, "rejected": 1}  # the user.deleted leaves a tombstone
    assert "line 6" in err
    assert "USER_ID_FORMAT=uuid" in err
    assert "native@example.com" not in err  # no payload PII in reports
    assert NATIVE_ID not in await users(db)
    rerun_lines = gzip.decompress(failed_out.read_bytes()).decode().splitlines()
    assert len(rerun_lines) == 1
    assert json.loads(rerun_lines[0])["payload"]["data"]["id"] == NATIVE_ID

    again = tmp_path / "again.jsonl"
    code, second, _ = await replay(
        capsys, migrated_database_url, str(failed_out), "--direct", "--failed-out", str(again),
        USER_ID_FORMAT="opaque",
    )  # fmt: skip
    assert (code, outcomes(second)) == (0, {"applied": 1})
    assert (await users(db))[NATIVE_ID]["email"] == "native@example.com"
    assert again.read_text() == ""
    status = await db.fetchval("SELECT status FROM webhook_events WHERE user_id = $1", NATIVE_ID)
    assert status == "applied"  # the same derived id: the rejected inbox row was evaluated again


# --- dry runs ---------------------------------------------------------------------------------------


async def test_direct_dry_run_reports_outcomes_and_writes_nothing(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = user_data(name="Stored")
    await replay(
        capsys, migrated_database_url, str(write_lines(tmp_path / "a.jsonl", envelope(existing))), "--direct"
    )
    before_users, before_events = await users(db), await db.fetch("SELECT * FROM webhook_events")

    source = write_lines(
        tmp_path / "b.jsonl",
        envelope(user_data()),
        envelope(existing),  # identical to the stored row
        envelope(user_data(email="not-an-email")),
    )
    code, summary, _ = await replay(
        capsys, migrated_database_url, str(source), "--direct", "--dry-run", "--random-ids"
    )

    assert summary["dry_run"] is True
    assert (code, outcomes(summary)) == (1, {"applied": 1, "stale": 1, "rejected": 1})
    assert await users(db) == before_users
    assert await db.fetch("SELECT * FROM webhook_events") == before_events


# --- --url ------------------------------------------------------------------------------------------


async def test_url_target_signs_and_posts_to_the_service(
    service: ServiceUnderTest, db: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = moments(2)
    people = [user_data(created=t[0]) for _ in range(40)]
    renamed = {**people[0], "name": "Renamed", "updatedAt": iso(t[1])}
    source = write_lines(
        tmp_path / "events.jsonl",
        *({"id": f"msg_{i}", "payload": envelope(p)} for i, p in enumerate(people)),
        {"id": "msg_rename", "payload": envelope(renamed, "user.updated")},
        {"id": "msg_bad", "payload": envelope(user_data(email="nope"))},
        envelope({"id": "x"}, "session.created"),
        {"id": "msg_delete", "payload": envelope({"id": people[1]["id"]}, "user.deleted")},
    )
    db_url = service.settings.database.url  # type: ignore[union-attr]
    code, summary, err = await replay(
        capsys, db_url, str(source), "--url", service.base_url, "--keep-ids", "--concurrency", "8"
    )

    assert code == 1
    assert outcomes(summary) == {"applied": 42, "ignored": 1, "rejected": 1}
    assert "msg_bad" in err
    assert [p["status"] for p in summary["problems"]] == [422]
    rows = await users(db)
    assert len(rows) == 39
    assert people[1]["id"] not in rows
    assert rows[people[0]["id"]]["name"] == "Renamed"
    assert await db.fetchval("SELECT status FROM webhook_events WHERE message_id = 'msg_7'") == "applied"

    code, again, _ = await replay(capsys, db_url, str(source), "--url", service.base_url, "--keep-ids")
    assert outcomes(again) == {"duplicate": 43, "rejected": 1}  # the service's own idempotency


async def test_url_dry_run_validates_locally_and_sends_nothing(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_lines(
        tmp_path / "e.jsonl",
        envelope(user_data()),
        envelope(user_data(user_id="bad id")),
        envelope({}, "x.y"),
    )
    with _scripted_server([]) as server:
        code, summary, _ = await replay(
            capsys, migrated_database_url, str(source), "--url", server.url, "--dry-run"
        )
    assert server.requests == []
    assert (code, outcomes(summary)) == (1, {"would_send": 1, "rejected": 1, "ignored": 1})


async def test_url_target_retries_503_and_429_honouring_retry_after(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = envelope(user_data())
    source = write_lines(tmp_path / "e.jsonl", {"id": "msg_retry", "payload": payload})
    answers = [
        (503, {"Retry-After": "1"}, b"{}"),
        (429, {"Retry-After": "0"}, b"{}"),
        (200, {}, b'{"status":"applied"}'),
    ]
    with _scripted_server(answers) as server:
        code, summary, _ = await replay(
            capsys,
            migrated_database_url,
            str(source),
            "--url",
            server.url,
            "--keep-ids",
            "--max-attempts",
            "3",
        )
    assert (code, outcomes(summary)) == (0, {"applied": 1})
    assert len(server.requests) == 3
    assert server.request_times[1] - server.request_times[0] >= 0.9  # Retry-After: 1 was honoured
    for headers, body in server.requests:
        assert headers["webhook-id"] == "msg_retry"
        assert json.loads(body) == payload
        Webhook(SECRET).verify(body, headers)  # raises unless svix's verifier accepts the signature


async def test_url_target_fails_an_event_on_other_4xx_without_retrying(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_lines(
        tmp_path / "e.jsonl", {"id": "m1", "payload": envelope(user_data())}, envelope(user_data())
    )
    failed_out = tmp_path / "failed.jsonl"
    answers = [(400, {}, b'{"status_code":400,"detail":"body must be a JSON object"}'),
               (200, {}, b'{"status":"applied"}')]  # fmt: skip
    with _scripted_server(answers) as server:
        code, summary, _ = await replay(
            capsys, migrated_database_url, str(source), "--url", server.url, "--concurrency", "1",
            "--failed-out", str(failed_out),
        )  # fmt: skip
    assert len(server.requests) == 2
    assert (code, outcomes(summary)) == (1, {"applied": 1, "failed": 1})
    (problem,) = summary["problems"]
    assert (problem["status"], problem["detail"], problem["id"]) == (400, "body must be a JSON object", "m1")
    assert json.loads(failed_out.read_text())["id"] == "m1"


async def test_url_target_stops_when_the_service_stays_unavailable(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [envelope(user_data()) for _ in range(5)]
    source = write_lines(tmp_path / "e.jsonl", *events)
    failed_out = tmp_path / "failed.jsonl"
    answers = [(503, {"Retry-After": "0"}, b"{}")] * 2
    with _scripted_server(answers) as server:
        code, summary, _ = await replay(
            capsys, migrated_database_url, str(source), "--url", server.url, "--concurrency", "1",
            "--max-attempts", "2", "--failed-out", str(failed_out),
        )  # fmt: skip
    assert len(server.requests) == 2  # the first event's two attempts; the rest were not sent
    assert (code, outcomes(summary)) == (1, {"failed": 5})
    assert "503" in summary["stopped"]
    rerun = [json.loads(line)["payload"] for line in failed_out.read_text().splitlines()]
    assert rerun == events  # everything not done can be re-run, in order


async def test_url_target_stops_when_the_signature_is_refused(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_lines(tmp_path / "e.jsonl", *(envelope(user_data()) for _ in range(3)))
    answers = [(401, {}, b'{"status_code":401,"detail":"invalid webhook signature"}')]
    with _scripted_server(answers) as server:
        code, summary, _ = await replay(
            capsys, migrated_database_url, str(source), "--url", server.url, "--concurrency", "1"
        )
    assert len(server.requests) == 1
    assert (code, outcomes(summary)) == (1, {"failed": 3})
    assert "WEBHOOK_SECRET" in summary["stopped"]
    assert summary["problems"][0]["status"] == 401


async def test_direct_target_that_cannot_connect_stops_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_lines(tmp_path / "e.jsonl", envelope(user_data()))
    started = time.monotonic()
    code, summary, _ = await replay(
        capsys, "postgresql://postgres@127.0.0.1:1/nowhere", str(source), "--direct"
    )
    assert time.monotonic() - started < 10
    assert code == 1
    assert summary["stopped"].startswith("cannot connect to DATABASE_URL (127.0.0.1:")
    assert summary["stopped"].endswith("see `sync-service check-config`")
    assert summary["events"] == 0


# --- inbox source -----------------------------------------------------------------------------------


async def test_inbox_rejected_rows_are_replayed_in_place_after_a_fix(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opaque = [user_data(user_id=f"native{i}") for i in range(3)]
    fine = user_data()
    source = write_lines(tmp_path / "e.jsonl", *(envelope(u) for u in [*opaque, fine]))
    await replay(capsys, migrated_database_url, str(source), "--direct", USER_ID_FORMAT="uuid")
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'rejected'") == 3

    code, summary, _ = await replay(
        capsys, migrated_database_url, "--inbox", "--status", "rejected", "--direct", "--keep-ids",
        USER_ID_FORMAT="opaque",
    )  # fmt: skip
    assert (code, outcomes(summary)) == (0, {"applied": 3})
    statuses = await db.fetch("SELECT status, attempts FROM webhook_events ORDER BY user_id")
    assert {(r["status"], r["attempts"]) for r in statuses} == {("applied", 2), ("applied", 1)}
    assert len(statuses) == 4  # the same rows, evaluated again under their own message ids
    assert set(await users(db)) == {u["id"] for u in [*opaque, fine]}


async def test_inbox_filters_and_keyset_pages(
    db: asyncpg.Connection,
    migrated_database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replay_sources, "INBOX_PAGE_ROWS", 3)  # many pages from a few rows
    same_time = datetime(2026, 1, 1, tzinfo=UTC)  # ties on received_at: the keyset's message_id decides
    rows = []
    for i in range(11):
        data = user_data(user_id=str(uuid.uuid4()))
        kind = "user.updated" if i % 2 else "user.created"
        received = same_time if i < 7 else same_time + timedelta(days=i)
        status = "rejected" if i % 3 == 0 else "applied"
        rows.append((f"m{i:02d}", kind, data["id"], received, status, json.dumps(envelope(data, kind))))
    await db.executemany(
        "INSERT INTO webhook_events (message_id, event_type, user_id, received_at, status, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        rows,
    )

    async def matched(*filters: str) -> int:
        _, summary, _ = await replay(
            capsys, migrated_database_url, "--inbox", *filters, "--direct", "--dry-run"
        )
        return int(summary["events"])

    assert await matched() == 11
    assert await matched("--status", "rejected") == 4
    assert await matched("--status", "rejected,applied", "--type", "user.updated") == 5
    assert await matched("--user-id", rows[4][2], "--user-id", rows[5][2]) == 2
    assert await matched("--since", "2026-01-01T00:00:00Z", "--until", "2026-01-09") == 8
    assert await matched("--since", "2026-01-02") == 4
    # every row exactly once, in (received_at, message_id) order, across page boundaries
    answers = [(200, {}, b'{"status":"applied"}')] * 11
    with _scripted_server(answers) as server:
        code, _, _ = await replay(
            capsys, migrated_database_url, "--inbox", "--url", server.url, "--keep-ids", "--concurrency", "1"
        )
    assert code == 0
    assert [headers["webhook-id"] for headers, _ in server.requests] == [f"m{i:02d}" for i in range(11)]


# --- conflicts ---------------------------------------------------------------------------------------


async def test_an_email_swap_out_of_order_is_settled_by_the_conflict_retry(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = moments(4)
    a = user_data(email="a@example.com", created=t[0])
    b = user_data(email="b@example.com", created=t[1])
    source = write_lines(
        tmp_path / "e.jsonl",
        envelope(a),
        envelope(b),
        envelope(
            {**b, "email": "a@example.com", "updatedAt": iso(t[3])}, "user.updated"
        ),  # b takes a's email
        envelope(
            {**a, "email": "c@example.com", "updatedAt": iso(t[2])}, "user.updated"
        ),  # a gave it up first
    )
    code, summary, _ = await replay(capsys, migrated_database_url, str(source), "--direct")

    assert code == 0
    # The two users go through different lanes (connections). Usually all four apply; when b's lane
    # takes a@example.com before a's user.created lands, that create is a conflict, a's update applies,
    # and the retried create is then older than a's row: stale. Either way nothing fails, and the rows
    # end the same.
    assert outcomes(summary) in ({"applied": 4}, {"applied": 3, "stale": 1})
    rows = await users(db)
    assert (rows[a["id"]]["email"], rows[b["id"]]["email"]) == ("c@example.com", "a@example.com")


# --- the real command: entry points, migrations, stdin, exit statuses --------------------------------


async def test_inbox_and_export_replayed_into_a_fresh_database_give_the_same_rows(
    db: asyncpg.Connection,
    migrated_database_url: str,
    fresh_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    t = moments(3)
    people = [user_data(created=t[0]) for _ in range(20)]
    updates = [{**p, "name": f"{p['name']} 2", "updatedAt": iso(t[1])} for p in people[:10]]
    source = write_lines(tmp_path / "export.jsonl", *(envelope(u, "user.updated") for u in updates),
                         *(envelope(p) for p in people))  # fmt: skip
    await replay(capsys, migrated_database_url, str(source), "--direct")
    expected = await users(db)

    env = {**os.environ, "DATABASE_URL": fresh_database_url, "WEBHOOK_SECRET": SECRET}
    script = ROOT / "scripts" / "replay_webhooks.py"
    assert os.access(script, os.X_OK)
    command = [sys.executable, str(script), "--inbox", "--inbox-database-url", migrated_database_url,
               "--direct", "--keep-ids"]  # fmt: skip
    done = await _run(command, env)
    assert done.returncode == 0, done.stderr
    assert "applied migrations" in done.stderr
    fresh = await asyncpg.connect(fresh_database_url)
    try:
        copied = {row["id"]: dict(row) for row in await fresh.fetch("SELECT * FROM users")}
        inbox = await fresh.fetchval("SELECT count(*) FROM webhook_events")
        await fresh.execute("TRUNCATE users, webhook_events, deleted_users")
    finally:
        await fresh.close()
    assert copied == expected
    assert inbox == 30

    # the exported file, from stdin, gives the same rows too
    stdin_run = [sys.executable, "-m", "sync_service", "replay", "-", "--direct", "--json"]
    done = await _run(stdin_run, env, stdin=source.read_text())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcomes"]["applied"] == 20  # the older updates arrive first: stale later
    fresh = await asyncpg.connect(fresh_database_url)
    try:
        assert {row["id"]: dict(row) for row in await fresh.fetch("SELECT * FROM users")} == expected
    finally:
        await fresh.close()


def test_usage_and_configuration_errors_exit_2(
    migrated_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write_lines(tmp_path / "e.jsonl", envelope(user_data()))
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    for argv in (
        [str(source)],  # no target
        [str(source), "--inbox", "--direct"],  # two sources
        ["--direct"],  # no source
        [str(source), "--direct", "--status", "rejected"],  # an inbox filter on a file
        [str(tmp_path / "missing.jsonl"), "--direct"],
        [str(source), "--direct", "--failed-out", str(source)],
        [str(source), "--direct", "--failed-out", str(tmp_path / "no" / "such" / "dir.jsonl")],
        [str(source), "--url", "ftp://example.com"],
        [str(source), "--direct", "--batch-size", "0"],
        ["--inbox", "--direct", "--since", "yesterday-ish"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(["replay", *argv])
        assert exited.value.code == 2, argv
        assert "error:" in capsys.readouterr().err
    monkeypatch.setenv("WEBHOOK_SECRET", "")
    assert main(["replay", str(source), "--url", "http://127.0.0.1:9"]) == 2
    assert "WEBHOOK_SECRET" in capsys.readouterr().err
    monkeypatch.delenv("DATABASE_URL")
    assert main(["replay", str(source), "--direct"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err


# --- a scripted HTTP server of the tests' own ----------------------------------------------------------


class _ScriptedServer:
    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.request_times: list[float] = []
        self.lock = threading.Lock()
        self.url = ""


class _scripted_server:  # a context manager, named like the thing it gives
    """A loopback HTTP server answering POSTs from a script of (status, headers, body); when the script
    runs out it answers 500, so an unexpected extra request shows up as a failure."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.state = _ScriptedServer(answers)
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with state.lock:
                    state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    state.request_times.append(time.monotonic())
                    status, headers, answer = state.answers.pop(0) if state.answers else (500, {}, b"{}")
                self.send_response(status)
                for name, value in {**headers, "content-type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _ScriptedServer:
        self.thread.start()
        self.state.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/better-auth"
        return self.state

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


async def _run(
    command: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        command,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- inbox rows replay can read -----------------------------------------------------------------------


async def test_payload_postgresql_cannot_store_as_it_was_replays_from_the_inbox(
    db: asyncpg.Connection, migrated_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A number beyond jsonb's range in a field we ignore: applied, its inbox copy a JSON object (the number
    as a string of its text), which `replay --inbox` re-applies alike: a duplicate, not failed."""
    data = user_data()
    body = json.dumps(envelope(data)).replace(
        '"emailVerified"', '"role": 1e999999, "big": 1e-999999, "emailVerified"'
    )
    with start_service(make_settings(migrated_database_url)) as service:
        async with service.client() as client:
            response = await deliver(client, body.encode(), message_id="msg_huge_number")
    assert response.json() == {"status": "applied"}
    stored = json.loads(await db.fetchval("SELECT payload::text FROM webhook_events"))
    assert (stored["data"]["role"], stored["data"]["big"]) == ("1e999999", "1e-999999")
    # A row as the service stored such payloads before: a JSON string of the body's text.
    await db.execute(
        "INSERT INTO webhook_events (message_id, event_type, user_id, received_at, status, payload)"
        " VALUES ('msg_legacy', 'user.created', $1, now(), 'applied', to_jsonb($2::text))",
        data["id"], body,
    )  # fmt: skip
    code, summary, _ = await replay(capsys, migrated_database_url, "--inbox", "--direct", "--keep-ids")
    assert (code, outcomes(summary)) == (0, {"duplicate": 2})


async def test_message_id_with_a_trailing_newline_is_refused_and_never_stored(
    db: asyncpg.Connection, migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_lines(tmp_path / "e.jsonl", {"id": "msg_1\n", "payload": envelope(user_data())})
    code, summary, err = await replay(capsys, migrated_database_url, str(source), "--direct", "--keep-ids")
    assert (code, outcomes(summary)) == (1, {"failed": 1})
    assert "webhook-id must be 1-255 visible ASCII characters" in err
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
