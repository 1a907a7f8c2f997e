"""Fast checks of the service in process (TestClient): body limits, failures in one line, a tampered log."""

from __future__ import annotations

import json

import pytest
from asgi import http_scope, run_async
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import COMMANDS, apply_commands
from typer.testing import CliRunner

from access_ledger import api
from access_ledger.cli import app as cli_app
from access_ledger.server import create_app
from ledger.app import AccessLedger

runner = CliRunner()


@pytest.fixture
def small(tmp_path):
    url = str(tmp_path / "l.db")
    with AccessLedger.open(url, create=True) as led:
        led.init()
        led.create_service_account("ci")
        token = api.create_token(led, "service_account:ci", ["read", "report"], actor="system")["token"]
    client = TestClient(create_app(url, max_body=200), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    client.get("/openapi.json")  # the token's first use is recorded now (TokenUsed), before a test counts
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
    assert got.json() == {
        "detail": f"the chain breaks at position {position}: the ledger was tampered with; run `access-ledger verify`"
    }
    fresh = TestClient(create_app(url), raise_server_exceptions=False, headers=dict(client.headers))
    assert fresh.get("/v1/events").status_code == 503  # a service started afresh checks the chain from its start


def test_a_bad_position_or_at_is_a_400_with_the_cli_message(small):
    _, client = small
    got = client.post(
        "/v1/check",
        json={
            "principal": "service_account:ci",
            "action": "read",
            "resource": "tenant/x",
            "at": "2026-01-01",
            "position": 1,
        },
    )
    assert got.status_code == 400 and got.json() == {"detail": "give --at or --position, not both"}
    got = client.get("/v1/what-can", params={"principal": "service_account:ci", "position": 99})
    assert got.status_code == 400 and got.json()["detail"].startswith("position: 99 is outside the log")


# -- the same answers as the CLI over random histories (in process: one app per history) ----------

QUESTION = st.tuples(
    st.sampled_from(["user:alice", "user:bob", "user:carol", "service_account:ci", "team:ml"]),
    st.sampled_from(["read", "update", "promote", "read_secret_value", "create"]),
    st.sampled_from(["model/m1", "pipeline/p1", "service_connector/aws", "secret/s"]),
    st.sampled_from(["prod", "dev"]),
    st.integers(0, 60),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=st.lists(COMMANDS, max_size=40), questions=st.lists(QUESTION, min_size=1, max_size=6))
def test_answers_over_random_histories_are_the_clis(tmp_path_factory, commands, questions):
    url = str(tmp_path_factory.mktemp("h") / "l.db")
    with AccessLedger.open(url, create=True) as led:
        led.init(at="2026-01-01T00:00:00Z")
        led.create_service_account("http-client", at="2026-01-01T00:00:00Z")  # no drawn command touches it
        apply_commands(led, commands, lambda i: f"2026-02-{1 + i // 4:02d}T{i % 4:02d}:00:00Z")
        token = api.create_token(led, "service_account:http-client", ["read"], actor="system")["token"]
        head = led.head()
    with TestClient(create_app(url), headers={"Authorization": f"Bearer {token}"}) as client:
        for principal, action, resource, tenant, position in questions:
            position = min(position, head)
            asked = ["check", principal, action, resource, "--tenant", tenant, "--position", str(position)]
            result = runner.invoke(cli_app, ["--db", url, *asked, "-f", "json"])
            got = client.post(
                "/v1/check",
                json={
                    "principal": principal,
                    "action": action,
                    "resource": resource,
                    "tenant": tenant,
                    "position": position,
                },
            )
            if result.exit_code == 2:
                assert got.status_code == 400 and result.stderr.strip() == f"Error: {got.json()['detail']}"
                continue
            assert got.status_code == 200 and got.json() == json.loads(result.stdout)
            rows = runner.invoke(
                cli_app,
                [
                    "--db",
                    url,
                    "who-can",
                    action,
                    resource,
                    "--tenant",
                    tenant,
                    "--position",
                    str(position),
                    "-f",
                    "json",
                ],
            )
            who = client.get(
                "/v1/who-can", params={"action": action, "resource": resource, "tenant": tenant, "position": position}
            )
            assert who.json()["rows"] == json.loads(rows.stdout)


def test_a_client_gone_before_its_body_is_whole_is_no_internal_error(small, caplog):
    # A load generator closing its connections at the end of a run, or a client giving up: the body never
    # arrives whole. That is the client's doing, not the service's: no 500, no stack trace in the log.
    import logging

    url, client = small
    app = create_app(url, max_body=200)
    messages = iter([{"type": "http.request", "body": b'{"type": ', "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = http_scope(
        "POST",
        "/v1/events",
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
            (b"authorization", client.headers["Authorization"].encode()),
        ],
    )
    with caplog.at_level(logging.INFO, logger="access_ledger.server"):
        run_async(lambda: app(scope, receive, send))
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    assert start["status"] == 400, sent
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    with AccessLedger.open(url) as led:
        assert led.verify().ok


def test_a_json_body_sent_as_a_form_is_told_to_say_json(small):
    # `curl -d '{...}'` without `-H 'Content-Type: application/json'` sends the JSON as a form: the answer says
    # what to change, instead of a 422 quoting the body back as a string.
    url, client = small
    question = json.dumps({"principal": "service_account:ci", "action": "read", "resource": "tenant/x"})
    with AccessLedger.open(url) as led:
        head = led.head()
    for kind in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": kind} if kind else {}
        got = client.post("/v1/check", content=question, headers=headers)
        assert got.status_code == 415, (kind, got.text)
        assert got.json() == {
            "detail": "the request body must be JSON, sent with the header Content-Type: application/json"
        }
    for kind in ("application/json", "application/json; charset=utf-8", "application/vnd.api+json"):
        got = client.post("/v1/check", content=question, headers={"Content-Type": kind})
        assert got.status_code == 200 and got.json()["allowed"] is False, (kind, got.text)
    # A JSON body that is not a question is still FastAPI's 422, naming the field.
    wrong = client.post("/v1/check", json={"principal": "service_account:ci"})
    assert wrong.status_code == 422 and any(e["loc"][-1] == "action" for e in wrong.json()["detail"])
    # A form-typed request to a route without a body is not a body error: the route answers.
    assert client.get("/v1/whoami", headers={"Content-Type": "text/plain"}).status_code == 200
    with AccessLedger.open(url) as led:
        assert led.head() == head
