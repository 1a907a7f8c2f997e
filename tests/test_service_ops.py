"""The service's operation: per-token rate limit, request timeout, bounded graceful shutdown, /v1/whoami."""

from __future__ import annotations

import logging
import signal
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server import build, start
from typer.testing import CliRunner

from access_ledger import api
from access_ledger.cli import app as cli_app
from access_ledger.server import create_app
from access_ledger.server.limits import RateLimited, RateLimiter, parse_rate
from ledger.app import AccessLedger

runner = CliRunner()


def _ledger(url: str) -> dict[str, str]:
    with AccessLedger.open(url, create=True) as led:
        led.init()
        led.create_service_account("ci")
        led.create_service_account("other")
        return {
            "ci": api.create_token(led, "service_account:ci", ["read"], actor="system")["token"],
            "other": api.create_token(led, "service_account:other", ["read", "report"], actor="system")["token"],
        }


def _client(url: str, **options) -> TestClient:
    return TestClient(create_app(url, **options), raise_server_exceptions=False)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    gaps=st.lists(st.floats(min_value=0, max_value=1.5, allow_nan=False), min_size=1, max_size=60),
)
def test_the_rate_limit_admits_no_more_than_the_burst_plus_the_rate(rate, gaps):
    clock = Clock()
    limiter = RateLimiter(rate, clock=clock)
    admitted: list[float] = []
    for gap in gaps:
        clock.now += gap
        try:
            limiter.admit("tok_a")
            admitted.append(clock.now)
        except RateLimited as refused:
            assert refused.retry_after >= 1
            # What Retry-After says is enough: after it, the next request is admitted.
            later = clock.now + refused.retry_after
            probe = RateLimiter(rate, clock=lambda later=later: later)
            probe._buckets = dict(limiter._buckets)
            probe.admit("tok_a")
    burst = max(1.0, rate)
    for i, start_at in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + (admitted[j] - start_at) * rate + 1e-9
    # A bucket never starves for long: a request after 1/rate s of quiet is always admitted.
    clock.now += 1 / rate + burst / rate
    limiter.admit("tok_a")


def test_parse_rate_reads_per_second_and_per_minute_and_refuses_the_rest():
    assert parse_rate("100/s") == 100 and parse_rate("30/m") == 0.5 and parse_rate(" 2.5 / s ") == 2.5
    for bad in ("fast", "10", "-1/s", "0/s", "10/h", "1e9/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_serve_refuses_a_bad_rate_limit_in_one_line(tmp_path):
    url = str(tmp_path / "l.db")
    _ledger(url)
    got = runner.invoke(cli_app, ["--db", url, "serve", "--rate-limit", "fast"])
    assert got.exit_code != 0
    assert got.output.strip() == "Error: --rate-limit: 'fast' is not a rate: write N/s or N/m, e.g. 100/s"


def test_a_token_over_its_rate_limit_gets_429_with_retry_after_and_others_go_on(ledger_url, caplog):
    tokens = _ledger(ledger_url)
    client = _client(ledger_url, rate_limit=2)
    ci_id = tokens["ci"].split(".")[0]
    ask = {"params": {"principal": "service_account:ci"}}
    with caplog.at_level(logging.INFO, logger="access_ledger.access"):
        assert [client.get("/v1/what-can", headers=_bearer(tokens["ci"]), **ask).status_code for _ in range(2)] == [
            200,
            200,
        ]
        refused = client.get("/v1/what-can", headers=_bearer(tokens["ci"]), **ask)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json() == {"detail": f"token {ci_id} is over its rate limit; retry after 1 s"}
    assert f"GET /v1/what-can 429 token={ci_id}" in caplog.text
    assert tokens["ci"].split(".", 1)[1] not in caplog.text
    # Another token, the unauthenticated health paths, and a wrong secret for the limited id are not held back.
    assert client.get("/v1/what-can", headers=_bearer(tokens["other"]), **ask).status_code == 200
    assert client.get("/healthz").status_code == 200
    forged = client.get("/v1/what-can", headers=_bearer(ci_id + ".guess"), **ask)
    assert forged.status_code == 401
    time.sleep(0.6)
    assert client.get("/v1/what-can", headers=_bearer(tokens["ci"]), **ask).status_code == 200


def test_a_refused_write_over_the_rate_limit_writes_nothing(ledger_url):
    tokens = _ledger(ledger_url)
    client = _client(ledger_url, rate_limit=1)
    event = {"id": "ev-1", "type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system", "name": "zed"}
    # (the first request records the token's first use, TokenUsed: the count starts after it)
    assert client.post("/v1/events", headers=_bearer(tokens["other"]), content=b"[]").status_code == 200
    with AccessLedger.open(ledger_url) as led:
        head = led.head()
    refused = client.post("/v1/events", headers=_bearer(tokens["other"]), json=event)
    assert refused.status_code == 429
    with AccessLedger.open(ledger_url) as led:
        assert led.head() == head


def test_a_request_not_answered_within_the_timeout_gets_503_in_one_line(ledger_url):
    tokens = _ledger(ledger_url)
    client = _client(ledger_url, request_timeout=0.5)
    with AccessLedger.open(ledger_url) as led:
        head = led.head()
    began = time.monotonic()
    # A read waiting for a position the log will not reach (it would wait 5 s, then 409).
    got = client.get(
        "/v1/what-can",
        headers=_bearer(tokens["ci"]),
        params={"principal": "service_account:ci", "min_position": head + 100},
    )
    assert time.monotonic() - began < 3
    assert got.status_code == 503 and got.headers["Retry-After"] == "1"
    assert got.json() == {
        "detail": "the request took longer than 0.5 s and was given up; a write may or may not have been made: "
        "retry it (events are idempotent by id)"
    }
    fine = client.get("/v1/what-can", headers=_bearer(tokens["ci"]), params={"principal": "service_account:ci"})
    assert fine.status_code == 200


def test_whoami_names_the_token_never_its_secret(ledger_url):
    tokens = _ledger(ledger_url)
    client = _client(ledger_url)
    client.get("/openapi.json", headers=_bearer(tokens["other"]))  # its first use (TokenUsed) is recorded now
    got = client.get("/v1/whoami", headers=_bearer(tokens["other"]))
    assert got.status_code == 200
    body = got.json()
    with AccessLedger.open(ledger_url) as led:
        position, _, link = led.store.head()
    assert body == {
        "token_id": tokens["other"].split(".")[0],
        "principal": "service_account:other",
        "scopes": ["read", "report"],
        "expires_at": None,
        "position": position,
        "link": link,
    }
    assert tokens["other"].split(".", 1)[1] not in got.text
    assert client.get("/v1/whoami").json()["error"] == "missing"


def test_sigterm_drains_a_request_in_flight_and_bounds_the_wait(backend, tmp_path):
    from conftest import _drop_schema, make_url

    url, schema = make_url(backend, tmp_path)
    try:
        tokens = build(url)
        with AccessLedger.open(url) as led:
            head = led.head()
        waiting = {"principal": "user:alice", "min_position": head + 1000}  # answered 409 after 5 s
        for timeout, drained in (("30", True), ("1", False)):
            running = start(url, tmp_path / f"server-{timeout}.log", tokens, "--shutdown-timeout", timeout)
            got: list = []

            def ask(running=running, got=got) -> None:
                try:
                    got.append(running.get("/v1/what-can", params=waiting).status_code)
                except httpx.TransportError as exc:
                    got.append(type(exc).__name__)

            asker = threading.Thread(target=ask)
            asker.start()
            time.sleep(1.0)
            signalled = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            # uvicorn ends by raising the signal it caught again, once it has shut down.
            assert running.process.wait(15) in (0, -signal.SIGTERM)
            asker.join(10)
            took = time.monotonic() - signalled
            if drained:
                assert got == [409] and took >= 3  # the request ran its course, then the process ended
            else:
                assert got == [503] and took < 3.5  # given up after the bounded wait, with a 503 to retry
            assert b"Traceback" not in running.log.read_bytes()
    finally:
        if schema:
            _drop_schema(schema)


def test_a_read_sees_one_snapshot_while_another_worker_writes(ledger_url):
    # Another worker's write committed between a read's look-up of the head row and of the newest
    # event must not look like a tampered head (a false 503 under load with `serve --workers N`).
    with AccessLedger.open(ledger_url, create=True) as led, AccessLedger.open(ledger_url) as other:
        led.init()
        with led.store.transaction(write=False) as c:
            c.execute("SELECT position, link FROM al_head WHERE id = 1")
            position, link = c.fetchone()
            other.create_user("zed")
            assert led.store._checked_head(c, position, link)[0] == position
        assert led.head() == position + 1


def test_an_array_item_with_a_huge_integer_is_refused_as_import_refuses_it(ledger_url):
    # Found by schemathesis: an array item orjson cannot re-encode (an integer beyond 64 bits) was a 500.
    tokens = _ledger(ledger_url)
    client = _client(ledger_url)
    client.get("/openapi.json", headers=_bearer(tokens["other"]))  # its first use (TokenUsed) is recorded now
    with AccessLedger.open(ledger_url) as led:
        head = led.head()
    line = b'{"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system", "name": 123456789012345678901234567890}'
    as_jsonl = client.post("/v1/events", headers=_bearer(tokens["other"]), content=line + b"\n")
    as_array = client.post("/v1/events", headers=_bearer(tokens["other"]), content=b"[" + line + b"]")
    assert as_jsonl.status_code == 400
    assert (as_array.status_code, as_array.json()) == (400, as_jsonl.json())
    assert as_array.json()["detail"].startswith("line 1: ")
    with AccessLedger.open(ledger_url) as led:
        assert led.head() == head
