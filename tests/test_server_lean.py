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
    if lean.status_code == slow.status_code == 200 and isinstance(lean.json(), dict) and "at" in lean.json():
        asked = json.loads(body)
        if asked.get("at") is None and asked.get("position") is None:
            # Asked as of now: each answer is at the instant it was made (microseconds apart); all else the same.
            lean_at, slow_at = lean.json()["at"], slow.json()["at"]
            assert lean_at <= slow_at and slow_at[:10] == lean_at[:10]
            assert lean.content.replace(lean_at.encode(), slow_at.encode()) == slow.content
            lean_headers, slow_headers = dict(lean.headers), dict(slow.headers)
            assert lean_headers.pop("content-length") == str(len(lean.content))  # (".000000" is left out)
            assert slow_headers.pop("content-length") == str(len(slow.content))
            assert lean_headers == slow_headers
            return
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


@pytest.fixture
def hops(monkeypatch):
    """The functions FastAPI hands to its thread pool (its sync dependencies and endpoints), as they are."""
    import fastapi.dependencies.utils
    import fastapi.routing
    import starlette.concurrency

    handed = []

    async def counted(func, *args, **kwargs):
        handed.append(func)
        return func(*args, **kwargs)

    for module in (starlette.concurrency, fastapi.dependencies.utils, fastapi.routing):
        monkeypatch.setattr(module, "run_in_threadpool", counted)
    return handed


def test_a_check_takes_no_hand_off_to_the_framework_thread_pool(served, hops):
    """The lean path: one hand-off to the ledger thread, none through FastAPI's dependencies and endpoint."""
    _, client, tokens = served
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

    # The same for a POST of events (a report token, its own bucket).
    headers = {"Authorization": f"Bearer {tokens['report']}"}
    token_id = tokens["report"].split(".")[0]
    assert limited.post("/v1/events", headers=headers, json=_access(id="r1")).status_code == 200
    over = limited.post("/v1/events", headers=headers, json=_access(id="r2"))
    assert over.status_code == 429 and over.headers["Retry-After"] == "1"
    assert over.json() == {"detail": f"token {token_id} is over its rate limit; retry after 1 s"}
    from access_ledger.server import service as service_module

    write = service_module.Service.write

    def slow_write(self, *args, **kwargs):
        time.sleep(1.0)
        return write(self, *args, **kwargs)

    monkeypatch.setattr(service_module.Service, "write", slow_write)
    began = time.monotonic()
    got = slow.post("/v1/events", headers=headers, json=_access(id="r3"))
    assert time.monotonic() - began < 0.9
    assert got.status_code == 503 and got.headers["Retry-After"] == "1"
    assert "a write may or may not have been made" in got.json()["detail"]


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

    # The same for a POST of events: nothing written.
    with AccessLedger.open(url) as led:
        head = led.head()
    sent.clear()
    chunks[:] = [b"[" + b" " * 400, b" " * 400 + b"]"]
    headers[0] = (b"authorization", f"Bearer {tokens['report']}".encode())
    scope.update(path="/v1/events", raw_path=b"/v1/events")
    run_async(lambda: app(scope, receive, send))
    assert sent[0]["status"] == 413
    with AccessLedger.open(url) as led:
        assert led.head() == head


# -- POST /v1/events ------------------------------------------------------------------------------------------

EVENT_IDS = ["e1", "e2", "e3"]


def _access(**fields):
    from ledger.timeutil import format_instant, now

    return {
        "type": "ResourceAccessed",
        "at": format_instant(now()),
        "actor": "service_account:ci",
        "principal": "user:ann",
        "tenant": "prod",
        "resource": "model/m1",
        "action": "read",
        "outcome": "allowed",
        **fields,
    }


events = st.builds(
    lambda eid, principal, kind, actor: {
        k: v for k, v in _access(id=eid, principal=principal, type=kind, actor=actor).items() if v is not None
    },
    eid=st.sampled_from(EVENT_IDS),
    principal=st.sampled_from(["user:ann", "user:bob", "user:nobody", "bad name"]),
    kind=st.sampled_from(  # (mostly one a report token may post: some bodies are written)
        ["ResourceAccessed"] * 4 + ["TokenUsed", "ReviewDecided", "UserCreated", "Nonsense", None]
    ),
    actor=st.sampled_from(["service_account:ci", "system", "user:ann", None]),
)
event_bodies = st.one_of(
    events.map(lambda e: json.dumps(e).encode()),
    st.lists(events, max_size=3).map(lambda es: json.dumps(es).encode()),
    st.lists(events, min_size=1, max_size=3).map(lambda es: b"\n".join(json.dumps(e).encode() for e in es)),
    st.sampled_from([b"", b"{", b"[1]", b"null", b"[]", b"\n\n", b"\xff\xfe", b" " * (MAX_BODY + 1)]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=event_bodies,
    who=st.sampled_from(["report", "read", "revoked", "expired", "inactive", "unknown", "garbage", None]),
    content_type=st.sampled_from(["application/json", "application/x-ndjson", "text/plain", None]),
)
def test_a_post_of_events_is_answered_as_fastapi_answers_it(served, body, who, content_type):
    """Refusals leave the ledger as it was, so the lean answer and FastAPI's to the same body must be identical;
    a body written (every event carries an id) is skipped when sent again, on either path, identically."""
    url, client, tokens = served
    headers = {} if who is None else {"Authorization": f"Bearer {tokens[who]}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    first = client.post("/v1/events", headers=headers, content=body)
    if first.status_code == 200:
        with AccessLedger.open(url) as led:
            position, _, link = led.store.head()
            assert (first.json()["position"], first.json()["link"]) == (position, link)
    lean, slow = _pair(client, "POST", "/v1/events", headers, body)
    _same(lean, slow)
    if first.status_code == 200:
        assert lean.json()["written"] == 0 and lean.json()["position"] == first.json()["position"]
    else:
        assert lean.status_code == first.status_code and lean.content == first.content


def test_the_refusals_of_a_post_of_events(served):
    url, client, tokens = served
    with AccessLedger.open(url) as led:
        head = led.head()

    def post(who: str, content, **headers: str):
        h = {"Authorization": f"Bearer {tokens[who]}", "Content-Type": "application/json", **headers}
        return client.post(
            "/v1/events", headers=h, content=content if isinstance(content, bytes) else json.dumps(content)
        )

    scope = post("read", _access())
    assert scope.status_code == 403 and scope.json()["error"] == "scope"
    assert post("revoked", _access()).json()["error"] == "revoked"
    used = post("report", _access(type="TokenUsed", token_id="tok_x"))
    assert used.status_code == 403 and "only the service records" in used.json()["detail"]
    bad = post("report", [_access(id="a"), _access(id="b", principal="user:nobody")])
    assert bad.status_code == 400 and bad.json()["detail"].startswith("line 2: ")
    big = post("report", b" " * (MAX_BODY + 1))
    assert big.status_code == 413 and big.json() == {"detail": f"request body larger than {MAX_BODY} bytes"}
    with AccessLedger.open(url) as led:
        assert led.head() == head  # nothing was written by any of them
    ok = post("report", [_access(id="a"), _access(id="b")])
    assert ok.status_code == 200
    assert ok.json() == {
        "written": 2,
        "skipped": 0,
        "first": head + 1,
        "last": head + 2,
        "position": head + 2,
        "link": ok.json()["link"],
    }
    with AccessLedger.open(url) as led:
        assert led.store.head()[2] == ok.json()["link"]


def test_a_post_of_events_takes_no_hand_off_to_the_framework_thread_pool(served, hops, caplog):
    """One hand-off to a writer thread (token check and write), none through FastAPI's."""
    _, client, tokens = served
    headers = {"Authorization": f"Bearer {tokens['report']}"}
    with caplog.at_level(logging.INFO, logger="access_ledger.access"):
        assert client.post("/v1/events", headers=headers, json=_access(id="lean")).status_code == 200
    assert hops == []
    assert f"POST /v1/events 200 token={tokens['report'].split('.')[0]}" in caplog.text
    assert tokens["report"].split(".", 1)[1] not in caplog.text
    assert client.post("/v1/events?via=fastapi", headers=headers, json=_access(id="slow")).status_code == 200
    assert hops  # (the FastAPI path does hand its sync dependency and endpoint over)


def _drive(app, path: str, headers: list[tuple[bytes, bytes]], body: bytes, delay: float = 0.0):
    """One request driven message by message: (messages sent, whether the app asked for the body, seconds taken).
    The body comes `delay` seconds after the app first asks for it."""
    import asyncio
    import time

    from asgi import http_scope, run_async

    sent: list[dict] = []
    asked: list[float] = []

    async def receive():
        asked.append(time.monotonic())
        if len(asked) == 1:
            await asyncio.sleep(delay)
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(30)  # (nothing more: the client waits for its answer)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    began = time.monotonic()
    run_async(lambda: app(http_scope("POST", path, headers), receive, send))
    return sent, bool(asked), time.monotonic() - began


def test_a_refused_caller_of_post_events_is_answered_without_waiting_for_its_body(served):
    """As the route's dependency: no token, a wrong, revoked or expired one, or another scope is refused at once,
    however slowly the body comes (its read is given up); one that asks for `100 Continue` gets none."""
    url, _, tokens = served
    app = create_app(url, max_body=MAX_BODY)
    body = json.dumps(_access(id="never")).encode()
    with AccessLedger.open(url) as led:
        head = led.head()
    for who, status in [
        (None, 401),
        ("garbage", 401),
        ("unknown", 401),
        ("revoked", 401),
        ("expired", 401),
        ("read", 403),
    ]:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if who is not None:
            headers.append((b"authorization", f"Bearer {tokens[who]}".encode()))
        sent, _, took = _drive(app, "/v1/events", headers, body, delay=10)
        assert sent[0]["status"] == status, (who, sent)
        assert took < 3, (who, took)  # (the body would come after 10 s)
        sent, read, _ = _drive(app, "/v1/events", [*headers, (b"expect", b"100-continue")], body)
        assert sent[0]["status"] == status and not read, who  # (a server sends 100 Continue on the first read)
    with AccessLedger.open(url) as led:
        assert led.head() == head


def test_one_request_timeout_bounds_a_post_of_events_whole(served, monkeypatch, caplog):
    """A body that comes slowly and a write that waits share one timeout (not one each), the 503 is FastAPI's to the
    header, and the access log names the token the request was admitted with."""
    import time

    from access_ledger.server import service as service_module

    url, _, tokens = served
    app = create_app(url, max_body=MAX_BODY, request_timeout=0.6)
    write = service_module.Service.write

    def slow_write(self, *args, **kwargs):
        time.sleep(1.5)
        return write(self, *args, **kwargs)

    monkeypatch.setattr(service_module.Service, "write", slow_write)
    body = json.dumps(_access(id="late")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {tokens['report']}".encode()),
    ]
    with caplog.at_level(logging.INFO, logger="access_ledger.access"):
        sent, read, took = _drive(app, "/v1/events", headers, body, delay=0.4)
    assert read
    assert sent[0]["status"] == 503
    assert took < 0.95  # 0.6 s in all (each part waiting 0.6 s would take 1.0 s)
    assert [name for name, _ in sent[0]["headers"]] == [b"retry-after", b"content-length", b"content-type"]
    assert json.loads(sent[1]["body"])["detail"].startswith("the request took longer than 0.6 s and was given up")
    assert f"POST /v1/events 503 token={tokens['report'].split('.')[0]}" in caplog.text


def test_a_post_of_events_whose_body_comes_after_its_token_is_checked_is_written(served):
    """The body still on its way once the token is admitted is awaited on the event loop, then written."""
    url, _, tokens = served
    app = create_app(url, max_body=MAX_BODY)
    body = json.dumps([_access(id="slow-1"), _access(id="slow-2")]).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {tokens['report']}".encode()),
    ]
    sent, read, took = _drive(app, "/v1/events", headers, body, delay=0.5)
    assert read and took >= 0.5
    assert sent[0]["status"] == 200, sent
    answer = json.loads(sent[1]["body"])
    assert answer["written"] == 2
    with AccessLedger.open(url) as led:
        assert led.store.head()[::2] == (answer["position"], answer["link"])


def test_a_refused_caller_whose_token_check_waits_has_no_more_than_the_prefetch_read(served, monkeypatch):
    """While the token check waits (behind a write holding the ledger, say), the body read meanwhile stops at
    PREFETCH bytes: a refused caller cannot fill the service's memory with a body it was never allowed to send."""
    import asyncio
    import time

    from asgi import http_scope, run_async

    from access_ledger.server import lean
    from access_ledger.server import service as service_module

    url, _, tokens = served
    app = create_app(url)  # the service's own body limit (32 MiB)
    authenticated = service_module.Service.authenticated

    def slow(self, *args, **kwargs):
        time.sleep(0.5)
        return authenticated(self, *args, **kwargs)

    monkeypatch.setattr(service_module.Service, "authenticated", slow)
    chunk, total = 64 * 1024, 8 * 1024 * 1024
    given = [0]
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(0)
        given[0] += chunk
        return {"type": "http.request", "body": b" " * chunk, "more_body": given[0] < total}

    async def send(message):
        sent.append(message)

    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(total).encode()),
        (b"authorization", f"Bearer {tokens['revoked']}".encode()),
    ]
    run_async(lambda: app(http_scope("POST", "/v1/events", headers), receive, send))
    assert sent[0]["status"] == 401
    assert given[0] <= lean.PREFETCH + chunk
