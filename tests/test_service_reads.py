"""A question to the service is a read: it never meets a writer's lock, and it reads the ledger in one transaction.

The current state a worker answers from is a cache the read path may store (pit._save); another worker's write
holding the ledger must not turn a question into a 503 (it is answered, and the state stored on a later request).
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

import projections.pit as pit
from access_ledger import api
from access_ledger.server import create_app
from ledger.app import AccessLedger
from ledger.integrity import KEY_ENV
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
