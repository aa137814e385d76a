"""Hostile webhook input, signed and unsigned: property-based (hypothesis) and a pinned corpus.

Promise (DESIGN): no input causes a 5xx; bad signatures/headers are 401 with a generic detail;
signed-but-invalid bodies are 400/422 (or 200 `ignored` for types we do not handle); bodies over the
limit are 413; rejected input changes no `users` row.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given, note, reject
from hypothesis import strategies as st

from tests.helpers.support import (
    SECRET_2,
    ServiceUnderTest,
    encode,
    make_settings,
    signed_headers,
    start_service,
)
from tests.reliability.conftest import fuzz_settings
from tests.reliability.hostile import (
    MAX_BODY,
    NASTY_FRAGMENTS,
    Mutation,
    check_signed_answer,
    check_unsigned_answer,
    json_values,
    mutated_body,
    mutations,
    sign,
    stamp_too_new,
    stamp_too_old,
    users_snapshot,
    valid_payload,
)

URL = "/webhooks/better-auth"


@pytest.fixture(scope="module")
def fuzzed(
    migrated_database_url: str,
) -> Iterator[tuple[ServiceUnderTest, httpx.Client, psycopg.Connection[Any]]]:
    """One service for the module, with a few users already synced (rejected input must not touch
    them), a plain HTTP client and a database connection to look at the rows."""
    with (
        start_service(make_settings(migrated_database_url)) as service,
        httpx.Client(base_url=service.base_url, timeout=30) as client,
        psycopg.connect(migrated_database_url, autocommit=True) as conn,
    ):
        for _ in range(3):
            body = encode(valid_payload())
            assert client.post(URL, content=body, headers=signed_headers(body)).json()["status"] == "applied"
        yield service, client, conn


def post_signed(client: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return client.post(URL, content=body, headers={**sign(body), **headers})


def assert_rows_unchanged_unless_applied(
    conn: psycopg.Connection[Any], before: list[tuple[Any, ...]], outcome: str | None
) -> None:
    if outcome != "applied":
        assert users_snapshot(conn) == before, "a rejected delivery changed the users table"


# --- bodies -------------------------------------------------------------------------------------


@fuzz_settings(ci_examples=150)
@given(changes=st.lists(mutations, min_size=1, max_size=3))
def test_near_valid_signed_bodies(fuzzed: Any, changes: list[Mutation]) -> None:
    """A genuine Better Auth payload with 1-3 fields removed or replaced by hostile JSON text."""
    _, client, conn = fuzzed
    body = mutated_body(valid_payload(), changes)
    note(f"changes={[(c.path, (c.fragment or b'')[:80]) for c in changes]} body={body[:400]!r}")
    before = users_snapshot(conn)
    response = post_signed(client, body)
    outcome = check_signed_answer(body, response)
    assert_rows_unchanged_unless_applied(conn, before, outcome)


@fuzz_settings(ci_examples=100)
@given(value=json_values)
def test_arbitrary_signed_json(fuzzed: Any, value: Any) -> None:
    _, client, conn = fuzzed
    body = json.dumps(value).encode()
    before = users_snapshot(conn)
    outcome = check_signed_answer(body, post_signed(client, body))
    assert_rows_unchanged_unless_applied(conn, before, outcome)


@fuzz_settings(ci_examples=100)
@given(body=st.binary(max_size=2048) | st.sampled_from(NASTY_FRAGMENTS), signed=st.booleans())
def test_arbitrary_bytes(fuzzed: Any, body: bytes, signed: bool) -> None:
    """Any bytes at all, signed (svix's signer, or the same HMAC over non-UTF-8 bytes) or not."""
    _, client, conn = fuzzed
    before = users_snapshot(conn)
    if signed:
        outcome = check_signed_answer(body, post_signed(client, body))
    else:
        response = client.post(URL, content=body, headers={"content-type": "application/json"})
        check_unsigned_answer(response)
        outcome = None
    assert_rows_unchanged_unless_applied(conn, before, outcome)


# --- headers ------------------------------------------------------------------------------------

SIGNATURE_JUNK = (
    "v1,abc", "garbage", "v1,a,b", "v1,", ",", "v1", "v2,abc", "v1,====", "v1, ", " ", "",
    "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "v1a,abc", "v1,abc v1,def", "v1,\x7f",
    "v1," + "A" * 70_000, " ".join(["v1,abc"] * 2_000), "v1,abc\tv1,def",
)  # fmt: skip
TIMESTAMP_JUNK: tuple[str | bytes, ...] = (
    "0", "-1", "1e20", "nan", "inf", "-inf", "9" * 30, "", "1.5", "0x10", "now", "١٢٣".encode(),
)  # fmt: skip
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
# Header values as raw bytes: latin-1 and UTF-8 text beyond ASCII, which httpx only sends as bytes.
header_bytes = st.text(st.characters(min_codepoint=0x80, max_codepoint=0x2FFF), min_size=1, max_size=50).map(
    lambda s: s.encode("utf-8")
) | st.binary(min_size=1, max_size=50).filter(lambda b: not set(b) & {0, 10, 13})


@dataclass(frozen=True)
class HeaderAttack:
    kind: str
    body: bytes
    headers: list[tuple[str, str | bytes]]
    genuine: bool | None  # does a valid signature survive? None: the server's choice


@st.composite
def header_attacks(draw: st.DrawFn) -> HeaderAttack:
    """A valid signed delivery's headers, attacked one way."""
    body = encode(valid_payload())
    good = signed_headers(body)
    prefix = draw(st.sampled_from(["webhook", "svix"]))
    headers: dict[str, str | bytes] = {
        "content-type": "application/json",
        f"{prefix}-id": good["webhook-id"],
        f"{prefix}-timestamp": good["webhook-timestamp"],
        f"{prefix}-signature": good["webhook-signature"],
    }
    kind = draw(
        st.sampled_from(
            ["drop", "signature", "signature-bytes", "timestamp", "stale-timestamp", "id", "duplicate",
             "extra-signature", "mixed-prefixes", "huge-header", "wrong-secret"]
        )
    )  # fmt: skip
    extra: list[tuple[str, str | bytes]] = []
    genuine: bool | None = False
    if kind == "drop":
        for name in draw(st.sets(st.sampled_from(["id", "timestamp", "signature"]), min_size=1)):
            headers.pop(f"{prefix}-{name}")
    elif kind == "signature":
        headers[f"{prefix}-signature"] = draw(st.sampled_from(SIGNATURE_JUNK) | header_text)
    elif kind == "signature-bytes":
        headers[f"{prefix}-signature"] = b"v1," + draw(header_bytes)
    elif kind == "timestamp":
        headers[f"{prefix}-timestamp"] = draw(st.sampled_from(TIMESTAMP_JUNK) | header_text | header_bytes)
    elif kind == "stale-timestamp":
        when = draw(st.sampled_from([stamp_too_old, stamp_too_new]))()
        resigned = signed_headers(body, message_id=good["webhook-id"])
        headers[f"{prefix}-timestamp"] = when
        headers[f"{prefix}-signature"] = resigned["webhook-signature"]
    elif kind == "id":
        headers[f"{prefix}-id"] = draw(header_text | header_bytes)
    elif kind == "duplicate":
        name = draw(st.sampled_from(["id", "timestamp", "signature"]))
        junk = draw(st.sampled_from(SIGNATURE_JUNK[:10]) | header_text)
        extra.append((f"{prefix}-{name}", junk))
        genuine = None  # which copy counts is the server's choice
    elif kind == "extra-signature":
        # Well-formed entries that do not match are skipped; a malformed one (not `version,base64`)
        # makes svix reject the whole header, which is its choice to make.
        junk = draw(st.sampled_from(["v1,AAAA", "v2,xyz", "v1,abc", "garbage", "v1,a,b"]))
        headers[f"{prefix}-signature"] = f"{junk} {good['webhook-signature']}"
        genuine = True if junk in ("v1,AAAA", "v2,xyz") else None
    elif kind == "mixed-prefixes":
        other = "svix" if prefix == "webhook" else "webhook"
        headers[f"{other}-signature"] = draw(st.sampled_from(SIGNATURE_JUNK[:10]))
        headers[f"{other}-id"] = "msg_other"
        genuine = None  # svix-* wins over webhook-* when both are present
    elif kind == "huge-header":
        extra.append(("x-filler", "a" * draw(st.integers(8_000, 60_000))))
        genuine = True
    elif kind == "wrong-secret":
        wrong = signed_headers(body, message_id=good["webhook-id"], secrets=(SECRET_2,))
        headers[f"{prefix}-signature"] = wrong["webhook-signature"]
    return HeaderAttack(kind, body, [*headers.items(), *extra], genuine)


@fuzz_settings(ci_examples=150)
@given(attack=header_attacks())
def test_hostile_headers(fuzzed: Any, attack: HeaderAttack) -> None:
    _, client, conn = fuzzed
    kind, genuine = attack.kind, attack.genuine
    note(f"kind={kind} genuine={genuine} headers={[(k, v[:100]) for k, v in attack.headers]}")
    before = users_snapshot(conn)
    try:
        response = client.post(URL, content=attack.body, headers=attack.headers)
    except httpx.LocalProtocolError:
        reject()  # h11 will not send it (e.g. trailing whitespace); the raw-socket tests cover those

    assert response.status_code < 500, (kind, response.status_code, response.text[:200])
    if genuine is True:
        assert response.status_code == 200, (kind, response.text)
        assert response.json()["status"] == "applied", (kind, response.text)
    elif genuine is False:
        assert response.status_code in (400, 401, 431), (kind, response.status_code, response.text[:200])
        if response.status_code == 401:
            check_unsigned_answer(response)
    else:
        assert response.status_code in (200, 400, 401), (kind, response.status_code)
    outcome = response.json().get("status") if response.status_code == 200 else None
    assert_rows_unchanged_unless_applied(conn, before, outcome)


@fuzz_settings(ci_examples=60)
@given(message_id=st.text(st.characters(max_codepoint=0x7E), min_size=1, max_size=400))
def test_signed_hostile_message_ids(fuzzed: Any, message_id: str) -> None:
    """A genuine signature over a hostile webhook-id: 400 unless it is 1-255 visible ASCII characters."""
    _, client, conn = fuzzed
    body = encode(valid_payload())
    before = users_snapshot(conn)
    try:
        response = client.post(URL, content=body, headers=signed_headers(body, message_id=message_id))
    except httpx.LocalProtocolError:
        return  # not sendable as an HTTP header value at all (control characters)
    assert response.status_code < 500, response.text
    plausible = 1 <= len(message_id) <= 255 and all(0x21 <= ord(c) <= 0x7E for c in message_id)
    if plausible:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code in (400, 401), response.text
    outcome = response.json().get("status") if response.status_code == 200 else None
    assert_rows_unchanged_unless_applied(conn, before, outcome)


@pytest.mark.parametrize(
    "raw_headers",
    [
        b"webhook-id: msg_\x00nul\r\n",
        b"webhook-signature: v1,\x01\x02\x03\r\n",
        b"webhook-timestamp: \x7f\x7f\r\n",
        b"webhook-id: " + "é".encode() + b"\r\n",
        b"webhook-signature: v1,abc\r\n webhook-id: folded\r\n",
    ],
    ids=["nul-in-id", "control-bytes", "del-bytes", "utf8-id", "obs-fold"],
)
def test_control_characters_in_headers(fuzzed: Any, raw_headers: bytes) -> None:
    """Bytes httpx refuses to send: a raw socket sends them. Never a 5xx (uvicorn may say 400)."""
    service, _, conn = fuzzed
    body = encode(valid_payload())
    host, port = service.base_url.removeprefix("http://").split(":")
    before = users_snapshot(conn)
    request = (
        b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + raw_headers + b"Content-Length: " + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n" + body
    )  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        reply = _read_all(sock)
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 401), reply[:300]
    assert users_snapshot(conn) == before


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- the pinned corpus: inputs that broke, or nearly broke, something ------------------------


def _with_raw(path: tuple[str, ...], fragment: bytes, kind: str = "user.created") -> bytes:
    return mutated_body(valid_payload(kind=kind), [Mutation(path, fragment)])


@pytest.mark.parametrize("depth", [200, 1_100, 100_000])
@pytest.mark.parametrize("where", [("data", "role"), ("extra",)], ids=["data.role", "top-level"])
def test_deeply_nested_json_is_not_a_500(fuzzed: Any, depth: int, where: tuple[str, ...]) -> None:
    """Nesting beyond the JSON decoder's recursion limit (~1000 levels) once raised RecursionError,
    which is not a msgspec.DecodeError, and became a 500."""
    _, client, conn = fuzzed
    body = _with_raw(where, b"[" * depth + b"]" * depth)
    assert len(body) < MAX_BODY
    before = users_snapshot(conn)
    response = post_signed(client, body)
    assert response.status_code < 500, response.text[:200]
    outcome = check_signed_answer(body, response)
    assert_rows_unchanged_unless_applied(conn, before, outcome)


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00+14:00",  # UTC year 0
        "9999-12-31T23:59:59-14:00",  # UTC year 10000
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
    ],
)
@pytest.mark.parametrize("kind", ["user.created", "user.deleted"])
def test_envelope_timestamp_at_the_edge_of_time(fuzzed: Any, timestamp: str, kind: str) -> None:
    """The envelope timestamp is stored in the inbox; one PostgreSQL cannot hold must not turn the
    delivery into a permanent 503 (the sender would retry it forever, and it would fail every batch
    it shares with other deliveries)."""
    _, client, conn = fuzzed
    body = _with_raw(("timestamp",), json.dumps(timestamp).encode(), kind)
    before = users_snapshot(conn)
    response = post_signed(client, body)
    assert response.status_code < 500, f"{response.status_code} {response.text[:200]}"
    outcome = check_signed_answer(body, response)
    assert_rows_unchanged_unless_applied(conn, before, outcome)


@pytest.mark.parametrize("field", ["createdAt", "updatedAt"])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_user_dates_at_the_edge_of_time(fuzzed: Any, field: str, value: str) -> None:
    _, client, conn = fuzzed
    body = _with_raw(("data", field), json.dumps(value).encode())
    before = users_snapshot(conn)
    response = post_signed(client, body)
    outcome = check_signed_answer(body, response)
    assert_rows_unchanged_unless_applied(conn, before, outcome)


@pytest.mark.parametrize("number", [b"1e999999", b"-1e999999", b"1e-999999"])
def test_unknown_field_with_an_out_of_range_number_is_ignored(fuzzed: Any, number: bytes) -> None:
    """DESIGN: unknown extra fields in `data` are ignored, not errors. JSON allows any exponent; jsonb
    (the inbox column) does not, which must not cost a valid user update its write."""
    _, client, conn = fuzzed
    payload = valid_payload()
    body = mutated_body(payload, [Mutation(("data", "role"), number)])
    response = post_signed(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "applied"}
    row = conn.execute("SELECT email FROM users WHERE id = %s", (payload["data"]["id"],)).fetchone()
    assert row == (payload["data"]["email"],)


@pytest.mark.parametrize(
    "data",
    [b"1e999999", b'{"id":"x","n":-1e999999}', b'"\\u0000"', b"[" * 300 + b"]" * 300, b'{"\\u0000":1}'],
    ids=["huge-number", "nested-huge-number", "nul", "nested", "nul-key"],
)
def test_unhandled_type_is_ignored_whatever_its_data(fuzzed: Any, data: bytes) -> None:
    """DESIGN: any type we do not handle is acknowledged as `ignored` (the sender must not retry)."""
    _, client, _ = fuzzed
    body = b'{"type":"session.created","timestamp":"2026-11-27T11:58:53.301Z","data":' + data + b"}"
    response = post_signed(client, body)
    assert (response.status_code, response.json()) == (200, {"status": "ignored"}), response.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"session.created","data":{"a":"\\u0000","b":1e999999}}',
        b'{"type":1e999999,"timestamp":"\\u0000"}',
        b'{"type":0x10,"timestamp":"\\u0000"}',
    ],
    ids=["unhandled-type", "type-is-a-huge-number", "not-json-after-a-wrong-type"],
)
def test_nul_with_a_body_only_a_typed_decoder_gets_through(fuzzed: Any, body: bytes) -> None:
    """Found by test_near_valid_signed_bodies: a \\u0000 escape, plus something the envelope decoder
    stops before (a number out of range, or junk after a field of the wrong type). The payload is then
    re-decoded without a type to make it storable, which raises, and that was a 500."""
    _, client, conn = fuzzed
    before = users_snapshot(conn)
    response = post_signed(client, body)
    assert response.status_code < 500, response.text
    check_signed_answer(body, response)
    assert users_snapshot(conn) == before


def test_rejected_retry_of_a_message_id_is_evaluated_again(fuzzed: Any) -> None:
    """DESIGN: a 422 is kept as `rejected`, and a later retry of the same message id is evaluated
    again, so a hostile first attempt cannot block the genuine one (nor the other way round)."""
    _, client, conn = fuzzed
    payload = valid_payload()
    message_id = f"msg_{uuid.uuid4().hex}"
    bad = mutated_body(payload, [Mutation(("data", "email"), b'"not an email"')])
    assert client.post(URL, content=bad, headers=sign(bad, message_id=message_id)).status_code == 422
    good = encode(payload)
    response = client.post(URL, content=good, headers=sign(good, message_id=message_id))
    assert response.json() == {"status": "applied"}
    assert client.post(URL, content=bad, headers=sign(bad, message_id=message_id)).json() == {
        "status": "duplicate"
    }
    assert conn.execute("SELECT email FROM users WHERE id = %s", (payload["data"]["id"],)).fetchone() == (
        payload["data"]["email"],
    )


# --- any signed bytes: no 5xx but 503, and a refusal stores nothing ----------------------------------

_REAL_BODIES = tuple(
    json.dumps(json.loads(line)["payload"]).encode()
    for line in (Path(__file__).resolve().parents[1] / "fixtures" / "better-auth-1.7.25-deliveries.jsonl")
    .read_text()
    .splitlines()
    if line.strip()
)
_ODD_ESCAPES = (
    b"\\u0000", b"\\ud800", b"\\udfff", b"\\ud800\\u0041", b"\\ud83d\\ude00", b"\\n", b"\\u2028",
    b"\\u001b[2J", b"\\\\", b"\\/", b"\\x41", b"\\U0001F600", b"\\",
)  # fmt: skip


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated-fixture", "escapes", "nested", "latin-1", "newlines"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    body = draw(st.sampled_from(_REAL_BODIES))
    if kind == "mutated-fixture":  # flip, insert or delete a few bytes of a genuine Better Auth body
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "insert", "delete"]))
            if action == "flip":
                data[at] = draw(st.integers(0, 255))
            elif action == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=4))
            else:
                del data[at]
        return bytes(data)
    if kind == "latin-1":
        return body.replace(b"Alice", "Zoë".encode("latin-1")).replace(b"Eve", b"\xe9\xe8")
    if kind == "newlines":  # a whole-string rule's trailing newline, on each field that decides
        field = draw(st.sampled_from([b'"id": "', b'"email": "', b'"type": "']))
        head, sep, tail = body.partition(field)
        end = tail.index(b'"')
        return head + sep + tail[:end] + b"\\n" + tail[end:]
    document = json.loads(body)
    if kind == "nested":
        depth = draw(st.sampled_from([10, 500, 990, 1_000, 5_000]))
        document["data"]["role"] = "@@nest@@"
        return json.dumps(document).encode().replace(b'"@@nest@@"', b"[" * depth + b"]" * depth)
    field = draw(st.sampled_from(["name", "email", "id", "role"]))
    document["data"][field] = "@@escape@@"
    escape = draw(st.sampled_from(_ODD_ESCAPES))
    return json.dumps(document).encode().replace(b"@@escape@@", b"a" + escape + b"b")


@fuzz_settings(ci_examples=120)
@given(body=hostile_bodies())
def test_no_signed_bytes_reach_a_5xx_and_refusals_store_nothing(fuzzed: Any, body: bytes) -> None:
    """DESIGN: never a 5xx but 503 for anything a sender can sign; a 4xx changes no user; a 400/401/413
    leaves no inbox row; a 422/409 one only as rejected/conflict, with no free text as its user id."""
    _, client, conn = fuzzed
    message_id = f"msg_{uuid.uuid4().hex}"
    note(f"body={body[:300]!r}")
    before = users_snapshot(conn)
    response = client.post(URL, content=body, headers=sign(body, message_id=message_id))
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text)
    if response.status_code < 400:
        return
    assert users_snapshot(conn) == before, "a refused delivery changed the users table"
    row = conn.execute(
        "SELECT status, user_id, jsonb_typeof(payload) FROM webhook_events WHERE message_id = %s",
        (message_id,),
    ).fetchone()
    if response.status_code in (409, 422):
        assert row is None or (row[0] in ("rejected", "conflict") and row[2] == "object"), row
        assert row is None or row[1] is None or re.fullmatch(r"[A-Za-z0-9_-]{1,255}", row[1]), row
    else:
        assert row is None, (response.status_code, row)
