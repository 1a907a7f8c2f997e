"""A question to the service is a read: it never meets a writer's lock, and it reads the ledger in one transaction.

The current state a worker answers from is a cache the read path may store (pit._save); another worker's write
holding the ledger must not turn a question into a 503 (it is answered, and the state stored on a later request).
"""

from __future__ import annotations

import time
from datetime import UTC, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import projections.pit as pit
from access_ledger import api
from access_ledger.server import create_app
from ledger.app import AccessLedger
from ledger.integrity import KEY_ENV
from ledger.timeutil import format_instant
from projections.pit import CURRENT

AT = "2026-01-01T00:00:00Z"
QUESTION = {"principal": "user:alice", "action": "read", "resource": "model/m", "tenant": "prod"}


@pytest.fixture(autouse=True)
def no_seal_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def _served(url: str) -> TestClient:
    """A service on a small ledger whose current state was never stored, its token's first use recorded."""
    with AccessLedger.open(url, create=True) as led:
        led.init(at=AT)
        led.create_tenant("prod", at=AT)
        led.create_user("alice", at=AT)
        led.assign_role("viewer", "user:alice", tenant="prod", at=AT)
        led.create_service_account("ci", at=AT)
        token = api.create_token(led, "service_account:ci", ["read"], actor="system")["token"]
    client = TestClient(create_app(url), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.get("/v1/whoami").status_code == 200  # TokenUsed now: the checks below write nothing else
    with AccessLedger.open(url) as led:
        assert led.snapshots.load(CURRENT) is None
    return client


@pytest.mark.parametrize("body", [QUESTION, [QUESTION, {**QUESTION, "action": "delete"}]], ids=["one", "batch"])
def test_a_check_is_answered_while_another_writer_holds_the_ledger(ledger_url, body):
    client = _served(ledger_url)
    with AccessLedger.open(ledger_url) as other, other.store.transaction(write=True) as c:
        head = other.store.lock_head(c)  # another worker in the middle of a write
        started = time.monotonic()
        got = client.post("/v1/check", json=body)
        took = time.monotonic() - started
    assert got.status_code == 200, got.text
    assert took < 2.0  # no wait on the lock either
    answers = got.json()["answers"] if isinstance(body, list) else [got.json()]
    assert [a["allowed"] for a in answers] == [True, False][: len(answers)]
    assert {a["position"] for a in answers} == {head[0]}
    # The state the check could not store is stored by a later one, once the ledger is free.
    assert client.post("/v1/check", json=QUESTION).json()["allowed"] is True
    with AccessLedger.open(ledger_url) as led:
        assert led.snapshots.load(CURRENT)[0] == head[0]


def test_a_check_past_the_save_interval_is_answered_while_another_writer_holds_the_ledger(ledger_url, monkeypatch):
    monkeypatch.setattr(pit, "SAVE_CURRENT_AFTER", 3)
    client = _served(ledger_url)
    assert client.post("/v1/check", json=QUESTION).status_code == 200  # the current state stored
    with AccessLedger.open(ledger_url) as other:
        for n in range(4):  # the head moves past the interval: the next check stores the state again
            other.create_user(f"u{n}")
        with other.store.transaction(write=True) as c:
            head = other.store.lock_head(c)
            got = client.post("/v1/check", json={**QUESTION, "principal": "user:u3"})
    assert got.status_code == 200, got.text
    assert got.json()["allowed"] is False and got.json()["position"] == head[0]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/v1/check", QUESTION),
        ("POST", "/v1/check", [QUESTION, {**QUESTION, "principal": "user:nobody"}]),
        ("POST", "/v1/check", [QUESTION, {**QUESTION, "position": 2}]),
        ("GET", "/v1/whoami", None),
    ],
    ids=["one", "unknown-name", "past", "whoami"],
)
def test_a_question_reads_the_ledger_in_one_transaction(ledger_url, method, path, body):
    """One connection checkout (BEGIN, the schema check, ROLLBACK) per request, whatever it reads on the way."""
    client = _served(ledger_url)
    assert client.post("/v1/check", json=QUESTION).status_code == 200  # the current state stored
    store = client.app.state.service._led.store
    real = store.datastore.get_connection
    taken = []
    store.datastore.get_connection = lambda **kw: taken.append(kw) or real(**kw)
    try:
        got = client.request(method, path, json=body)
    finally:
        del store.datastore.get_connection
    assert got.status_code in (200, 400), got.text
    assert len(taken) == 1, taken


PRINCIPALS = ["user:alice", "user:bob", "user:nobody", "team:ops", "service_account:ci", "bad name", "user:"]
TENANTS = ["prod", "dev", "nowhere", "", None]
RESOURCES = ["model/m", "service_connector/aws", "service_connector/gcp", "service_connector/", "pipeline/p"]


def _one_by_one(led, queries) -> str | None:
    """The oracle: each question's names looked up on their own, in order (as a batch was checked before)."""
    from ledger.errors import LedgerError

    for q in queries:
        connector = q["resource"] if q["resource"].startswith("service_connector/") else None
        for names in ((q["principal"], None, None), (None, q.get("tenant"), connector)):
            try:
                api.require_recorded(led, *names)
            except LedgerError as exc:
                return f"{type(exc).__name__}: line {q['_line']}: {exc}"
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from(PRINCIPALS), st.sampled_from(TENANTS), st.sampled_from(RESOURCES)),
        min_size=1,
        max_size=12,
    )
)
def test_a_batch_refuses_the_first_unknown_name_as_each_question_alone_would(names_led, asked):
    from ledger.errors import LedgerError

    queries = [
        {"principal": p, "action": "read", "resource": r, **({} if t is None else {"tenant": t}), "_line": n}
        for n, (p, t, r) in enumerate(asked, 1)
    ]
    try:
        api._require_recorded_names(names_led, queries)
        got = None
    except LedgerError as exc:
        got = f"{type(exc).__name__}: {exc}"
    assert got == _one_by_one(names_led, queries)


@pytest.fixture
def names_led(led):
    led.create_tenant("prod")
    led.create_tenant("dev")
    for user in ("alice", "bob"):
        led.create_user(user)
    led.create_team("ops")
    led.create_service_account("ci")
    led.register_connector("aws", "prod")
    return led


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-7, minutes=-30))])))
def test_an_instant_is_written_as_strftime_wrote_it(value):
    """format_instant (on every request) takes a faster way to the same canonical text."""
    utc = value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)
    want = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")
    assert format_instant(value.replace(tzinfo=value.tzinfo or UTC)) == want


def test_each_sqlite_connection_keeps_its_prepared_statements(tmp_path, monkeypatch):
    """A read's few statements are compiled once per connection, not at every use (a cache of one did that)."""
    import sqlite3

    opened = []
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: opened.append(kw) or real(*a, **kw))
    with AccessLedger.open(str(tmp_path / "l.db"), create=True) as led:
        led.init(at=AT)
        led.create_user("alice", at=AT)
        assert led.head() == 2
    assert opened and all(kw.get("cached_statements", 0) >= 16 for kw in opened)
    with sqlite3.connect(tmp_path / "l.db") as db:  # (the journal mode eventsourcing sets is set as before)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
