"""Fast checks of the service in process (TestClient): body limits, failures in one line, a tampered log."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from access_ledger import api
from access_ledger.server import create_app
from ledger.app import AccessLedger


@pytest.fixture
def small(tmp_path):
    url = str(tmp_path / "l.db")
    with AccessLedger.open(url, create=True) as led:
        led.init()
        led.create_service_account("ci")
        token = api.create_token(led, "service_account:ci", ["read", "report"], actor="system")["token"]
    client = TestClient(create_app(url, max_body=200), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    return url, client


def test_a_body_over_the_limit_is_refused_by_its_length_and_as_it_arrives(small):
    url, client = small
    with AccessLedger.open(url) as led:
        head = led.head()
    declared = client.post("/v1/events", content=b"x" * 201)
    assert declared.status_code == 413 and declared.json() == {"detail": "request body larger than 200 bytes"}

    def chunks():
        for _ in range(10):
            yield b"{" + b" " * 40

    streamed = client.post("/v1/events", content=chunks())  # chunked: no Content-Length
    assert streamed.status_code == 413 and streamed.json() == {"detail": "request body larger than 200 bytes"}
    with AccessLedger.open(url) as led:
        assert led.head() == head


def test_an_unexpected_failure_is_one_line_and_no_stack_trace(small, monkeypatch, caplog):
    _, client = small

    def broken(*args, **kwargs):
        raise RuntimeError("boom at /secret/path")

    monkeypatch.setattr(api, "who_can", broken)
    got = client.get("/v1/who-can", params={"action": "read", "resource": "tenant/x"})
    assert got.status_code == 500
    assert got.json() == {"detail": "internal error (RuntimeError); the service's log has the details"}
    assert "Traceback" not in got.text and "boom" not in got.text
    assert any("GET /v1/who-can failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_tampered_log_makes_the_service_refuse_every_token(small):
    url, client = small
    assert client.get("/v1/events").status_code == 200
    with AccessLedger.open(url) as led:
        position = led.create_service_account("other")
        led.create_service_account("more")  # the edited event is not the head (the head is checked on every read)
        with led.store.transaction(write=True) as c:  # an event written after the service last looked, edited
            c.execute(f"SELECT state FROM {led.store.table} WHERE {led.store.pos_col} = ?", (position,))
            edited = bytes(c.fetchone()[0]).replace(b'"other"', b'"otter"')
            c.execute(f"UPDATE {led.store.table} SET state = ? WHERE {led.store.pos_col} = ?", (edited, position))
    got = client.get("/v1/events")
    assert got.status_code == 503
    assert got.json() == {"detail": f"the chain breaks at position {position}: the ledger was tampered with; run "
                                    "`access-ledger verify`"}
    fresh = TestClient(create_app(url), raise_server_exceptions=False, headers=dict(client.headers))
    assert fresh.get("/v1/events").status_code == 503  # a service started afresh checks the chain from its start


def test_a_bad_position_or_at_is_a_400_with_the_cli_message(small):
    _, client = small
    got = client.post("/v1/check", json={"principal": "service_account:ci", "action": "read",
                                         "resource": "tenant/x", "at": "2026-01-01", "position": 1})
    assert got.status_code == 400 and got.json() == {"detail": "give --at or --position, not both"}
    got = client.get("/v1/what-can", params={"principal": "service_account:ci", "position": 99})
    assert got.status_code == 400 and got.json()["detail"].startswith("position: 99 is outside the log")
