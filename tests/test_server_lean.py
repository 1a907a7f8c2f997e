"""The lean path (server/lean.py) answers `POST /v1/check` and `GET /v1/whoami` exactly as FastAPI did.

The oracle: the same request with a query string (`?via=fastapi`, which neither endpoint reads) is passed
to the FastAPI app unchanged, so each pair below must get the same status, headers and body, on both
backends, for good and bad tokens, scopes, bodies and sizes.
"""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access_ledger import api
from access_ledger.server import create_app
from ledger.app import AccessLedger
from ledger.tokens import new_token

MAX_BODY = 600
NAMES = ["user:ann", "user:bob", "user:nobody", "team:ops", "service_account:ci", "bad name", ""]


@pytest.fixture
def served(ledger_url):
    """A small ledger, one token per case, and an in-process client of its service."""
    with AccessLedger.open(ledger_url, create=True) as led:
        d = "2026-01-01T00:00:00Z"
        led.init(org="acme", at=d)
        led.create_tenant("prod", at=d)
        for name in ("ann", "bob"):
            led.create_user(name, at=d)
        led.create_team("ops", at=d)
        led.add_team_member("ops", "user:ann", at=d)
        led.assign_role("editor", "team:ops", tenant="prod", at=d)
        led.assign_role("viewer", "user:bob", tenant="prod", resource="model/m1", at=d)
        led.create_service_account("ci", at=d)
        led.create_service_account("gone", at=d)

        def token(principal: str, scopes: list[str]) -> str:
            return api.create_token(led, principal, scopes, actor="system")["token"]

        secret, token_id, digest = new_token()
        led.append(
            {
                "type": "TokenIssued",
                "at": "2026-01-01T01:00:00Z",
                "actor": "system",
                "token_id": token_id,
                "principal": "service_account:ci",
                "scopes": ["read"],
                "expires_at": "2026-01-02T00:00:00Z",
                "secret_sha256": digest,
            }
        )
        tokens = {
            "expired": secret,
            "read": token("service_account:ci", ["read"]),
            "report": token("service_account:ci", ["report"]),
            "revoked": token("service_account:ci", ["read"]),
            "inactive": token("service_account:gone", ["read"]),
        }
        api.revoke_token(led, tokens["revoked"].split(".")[0], actor="system")
        led.deactivate_service_account("gone")
    client = TestClient(create_app(ledger_url, max_body=MAX_BODY), raise_server_exceptions=False)
    for t in tokens.values():  # each token's first use (TokenUsed) now, so that no case below moves the head
        client.get("/v1/whoami?warm=1", headers={"Authorization": f"Bearer {t}"})
    tokens["unknown"] = tokens["read"].split(".")[0] + ".wrong-secret"
    tokens["garbage"] = "not-a-token"
    return ledger_url, client, tokens


def _pair(client, method: str, path: str, headers: dict[str, str], content: bytes | None = None):
    lean = client.request(method, path, headers=headers, content=content)
    slow = client.request(method, path + "?via=fastapi", headers=headers, content=content)
    return lean, slow


def _same(lean, slow) -> None:
    assert lean.status_code == slow.status_code
    assert lean.content == slow.content
    assert dict(lean.headers) == dict(slow.headers)


questions = st.fixed_dictionaries(
    {
        "principal": st.sampled_from(NAMES),
        "action": st.sampled_from(["read", "write", "delete", ""]),
        "resource": st.sampled_from(["model/m1", "model/m2", "dataset/d", ""]),
    },
    optional={
        "tenant": st.sampled_from(["prod", "dev", None]),
        "at": st.sampled_from(["2026-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "yesterday", None]),
        "position": st.one_of(st.integers(min_value=-1, max_value=40), st.just("3")),
        "extra": st.just(1),
    },
)
bodies = st.one_of(
    questions.map(lambda q: json.dumps(q).encode()),
    st.lists(questions, max_size=4).map(lambda qs: json.dumps(qs).encode()),
    st.sampled_from([b"", b"{", b"[1]", b"null", b'"x"', b"{}", b"NaN", b"\xff\xfe", b" " * (MAX_BODY + 1)]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=bodies,
    who=st.sampled_from(["read", "report", "revoked", "expired", "inactive", "unknown", "garbage", None]),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None]),
)
def test_a_check_is_answered_as_fastapi_answers_it(served, body, who, content_type):
    _, client, tokens = served
    headers = {} if who is None else {"Authorization": f"Bearer {tokens[who]}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    lean, slow = _pair(client, "POST", "/v1/check", headers, body)
    _same(lean, slow)


@pytest.mark.parametrize("who", ["read", "report", "revoked", "expired", "inactive", "unknown", "garbage", None])
def test_whoami_is_answered_as_fastapi_answers_it(served, who):
    _, client, tokens = served
    headers = {} if who is None else {"Authorization": f"Bearer {tokens[who]}"}
    lean, slow = _pair(client, "GET", "/v1/whoami", headers)
    _same(lean, slow)
    for scheme in ("Basic", "bearer", "Bearer  "):  # other schemes, case, spaces: as HTTPBearer reads them
        if who is not None:
            _same(*_pair(client, "GET", "/v1/whoami", {"Authorization": f"{scheme} {tokens[who]}"}))


def test_the_refusals_the_lean_path_gives(served):
    url, client, tokens = served
    ask = json.dumps({"principal": "user:ann", "action": "read", "resource": "model/m1", "tenant": "prod"})
    with AccessLedger.open(url) as led:
        head = led.head()

    def post(who: str, content: str | bytes = ask, **headers: str):
        h = {"Authorization": f"Bearer {tokens[who]}", "Content-Type": "application/json", **headers}
        return client.post("/v1/check", headers=h, content=content)

    ok = post("read")
    assert ok.status_code == 200 and ok.json()["allowed"] is True and ok.json()["position"] == head
    revoked = post("revoked")
    assert revoked.status_code == 401 and revoked.json()["error"] == "revoked"
    assert revoked.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert post("expired").json()["error"] == "expired"
    scope = post("report")
    assert scope.status_code == 403 and scope.json()["error"] == "scope"
    big = post("read", content=b" " * (MAX_BODY + 1))
    assert big.status_code == 413 and big.json() == {"detail": f"request body larger than {MAX_BODY} bytes"}
    bad_at = post("read", content=json.dumps({**json.loads(ask), "at": "not-a-time"}))
    assert bad_at.status_code == 400 and "\n" not in bad_at.json()["detail"]
    with AccessLedger.open(url) as led:
        assert led.head() == head  # nothing was written by any of them


def test_the_lean_path_logs_the_token_id_never_the_token(served, caplog):
    _, client, tokens = served
    ask = {"principal": "user:ann", "action": "read", "resource": "model/m1", "tenant": "prod"}
    with caplog.at_level(logging.INFO, logger="access_ledger.access"):
        client.post("/v1/check", headers={"Authorization": f"Bearer {tokens['read']}"}, json=ask)
        client.post("/v1/check", headers={"Authorization": f"Bearer {tokens['revoked']}"}, json=ask)
        client.get("/v1/whoami", headers={"Authorization": f"Bearer {tokens['unknown']}"})
    assert f"POST /v1/check 200 token={tokens['read'].split('.')[0]}" in caplog.text
    assert "POST /v1/check 401 token=-" in caplog.text
    assert "GET /v1/whoami 401 token=-" in caplog.text
    for t in tokens.values():
        if "." in t:
            assert t.split(".", 1)[1] not in caplog.text


def test_a_check_takes_no_hand_off_to_the_framework_thread_pool(served, monkeypatch):
    """The lean path: one hand-off to the ledger thread, none through FastAPI's dependencies and endpoint."""
    import fastapi.dependencies.utils
    import fastapi.routing
    import starlette.concurrency

    _, client, tokens = served
    hops = []

    async def counted(func, *args, **kwargs):
        hops.append(func)
        return func(*args, **kwargs)

    for module in (starlette.concurrency, fastapi.dependencies.utils, fastapi.routing):
        monkeypatch.setattr(module, "run_in_threadpool", counted)
    ask = {"principal": "user:ann", "action": "read", "resource": "model/m1", "tenant": "prod"}
    headers = {"Authorization": f"Bearer {tokens['read']}"}
    assert client.post("/v1/check", headers=headers, json=ask).status_code == 200
    assert client.get("/v1/whoami", headers=headers).status_code == 200
    assert hops == []
    assert client.post("/v1/check?via=fastapi", headers=headers, json=ask).status_code == 200
    assert hops  # (the FastAPI path, for comparison, does hand its sync dependencies and endpoint over)


def test_a_first_use_another_worker_is_writing_is_answered_and_recorded_later(ledger_url, monkeypatch):
    """Two workers taking a new token's first requests at once: the one that finds the ledger locked while
    recording TokenUsed answers anyway (the token was checked) and records the use on a later request."""
    from ledger.errors import ConcurrentWrite

    with AccessLedger.open(ledger_url, create=True) as led:
        led.init()
        led.create_service_account("ci")
        token = api.create_token(led, "service_account:ci", ["read"], actor="system")["token"]
        head = led.head()
    client = TestClient(create_app(ledger_url), raise_server_exceptions=False)
    append = AccessLedger.append
    busy = [True]

    def locked_once(self, event, *args, **kwargs):
        if event["type"] == "TokenUsed" and busy:
            busy.pop()
            raise ConcurrentWrite("another writer held the ledger too long: nothing was written; try again")
        return append(self, event, *args, **kwargs)

    monkeypatch.setattr(AccessLedger, "append", locked_once)
    headers = {"Authorization": f"Bearer {token}"}
    first = client.get("/v1/whoami", headers=headers)
    assert first.status_code == 200 and first.json()["position"] == head
    assert client.get("/v1/whoami", headers=headers).status_code == 200
    with AccessLedger.open(ledger_url) as led:
        assert led.head() == head + 1 and [e["type"] for _, e in led.read(head + 1)] == ["TokenUsed"]


def test_the_lean_path_keeps_the_rate_limit_and_the_timeout(served, monkeypatch):
    """429 with Retry-After after the token's burst, and 503 when the answer takes longer than the timeout:
    the bodies and headers the FastAPI path gives (its tests: test_service_ops.py)."""
    import time

    url, _, tokens = served
    ask = {"principal": "user:ann", "action": "read", "resource": "model/m1", "tenant": "prod"}
    headers = {"Authorization": f"Bearer {tokens['read']}"}
    token_id = tokens["read"].split(".")[0]
    limited = TestClient(create_app(url, rate_limit=1), raise_server_exceptions=False)
    assert limited.post("/v1/check", headers=headers, json=ask).status_code == 200
    over = limited.post("/v1/check", headers=headers, json=ask)
    assert over.status_code == 429 and over.headers["Retry-After"] == "1"
    assert over.json() == {"detail": f"token {token_id} is over its rate limit; retry after 1 s"}

    slow = TestClient(create_app(url, request_timeout=0.3), raise_server_exceptions=False)
    check = api.check

    def slow_check(*args, **kwargs):
        time.sleep(1.0)
        return check(*args, **kwargs)

    monkeypatch.setattr(api, "check", slow_check)
    began = time.monotonic()
    got = slow.post("/v1/check", headers=headers, json=ask)
    assert time.monotonic() - began < 0.9
    assert got.status_code == 503 and got.headers["Retry-After"] == "1"
    assert got.json() == {
        "detail": "the request took longer than 0.3 s and was given up; a write may or may not have been made: "
        "retry it (events are idempotent by id)"
    }


def test_a_body_longer_than_its_declared_length_is_refused_past_the_limit(served):
    """A server that let more bytes through than Content-Length declared still meets the limit: 413."""
    from asgi import run_async

    url, _, tokens = served
    app = create_app(url, max_body=MAX_BODY)
    sent: list[dict] = []
    chunks = [b"[" + b" " * 400, b" " * 400 + b"]"]

    async def receive():
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    headers = [
        (b"authorization", f"Bearer {tokens['read']}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", b"10"),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/check",
        "raw_path": b"/v1/check",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
        "asgi": {"version": "3.0"},
    }
    run_async(lambda: app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"detail": f"request body larger than {MAX_BODY} bytes"}
