"""The service's write side end to end (real uvicorn, SQLite and PostgreSQL): changes as the token's principal
held to the authority rules, review steps as the reviewer, tokens issued and revoked by an admin token."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import BACKENDS, _drop_schema, make_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import Running, start, stop

from access_ledger import api
from ledger.app import AccessLedger
from ledger.errors import LedgerError
from ledger.timeutil import format_instant, now
from ledger.tokens import new_token

D = "2026-01-01T00:00:00Z"


def build(url: str) -> dict[str, str]:
    """Tenant prod; alice an org admin and prod admin, bob holding nothing, carol a reviewer, olivia a
    campaign owner, root the token admin; tokens per scope, and an expired and a revoked `change` token."""
    with AccessLedger.open(url, create=True) as led:
        led.init(org="acme", at=D)
        led.create_tenant("prod", at=D)
        for user in ("alice", "bob", "carol", "olivia", "erin"):
            led.create_user(user, at=D)
        led.create_service_account("root", at=D)
        led.assign_role("org_admin", "user:alice", at=D)
        led.assign_role("admin", "user:alice", tenant="prod", at=D)
        led.assign_role("viewer", "user:carol", tenant="prod", at=D)
        led.assign_role("editor", "user:erin", tenant="prod", at=D)
        tokens: dict[str, str] = {}
        token, token_id, digest = new_token()
        led.append(
            {
                "type": "TokenIssued",
                "at": D,
                "actor": "system",
                "token_id": token_id,
                "principal": "user:alice",
                "scopes": ["change", "review", "admin"],
                "expires_at": "2026-01-02T00:00:00Z",
                "secret_sha256": digest,
            }
        )
        tokens["expired"] = token
        for name, principal, scopes in (
            ("alice", "user:alice", ["change"]),
            ("bob", "user:bob", ["change"]),
            ("carol", "user:carol", ["review"]),
            ("olivia", "user:olivia", ["review"]),
            ("admin", "service_account:root", ["admin"]),
            ("read", "user:alice", ["read", "audit", "report"]),
            ("revoked", "user:alice", ["change"]),
        ):
            tokens[name] = api.create_token(led, principal, scopes, actor="system")["token"]
        api.revoke_token(led, tokens["revoked"].split(".")[0], actor="system")
    return tokens


def _served(tmp_path_factory, backend: str, name: str) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp(f"{name}-{backend}")
    url, schema = make_url(backend, folder)
    running = start(url, folder / "server.log", build(url))  # start() uses each token once
    try:
        yield running
    finally:
        stop(running)
        if schema:
            _drop_schema(schema)


@pytest.fixture(scope="session", params=BACKENDS)
def svc(request, tmp_path_factory) -> Iterator[Running]:
    """One service per backend for the session."""
    yield from _served(tmp_path_factory, request.param, "write")


def head(svc: Running) -> tuple[int, str]:
    with AccessLedger.open(svc.url) as led:
        position, _, link = led.store.head()
    return position, link


def event_at(svc: Running, position: int) -> dict:
    with AccessLedger.open(svc.url) as led:
        return api.read_events(led, position - 1, 1)["events"][0]["event"]


# -- tokens and scopes -------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/v1/changes", {"json": {"type": "TenantCreated", "tenant": "x"}}, "change"),
    ("GET", "/v1/reviews", {}, "review"),
    ("POST", "/v1/reviews", {"json": {"name": "x", "tenants": ["prod"], "reviewer": "user:carol"}}, "review"),
    ("GET", "/v1/reviews/x/items", {}, "review"),
    ("POST", "/v1/reviews/x/decisions", {"json": {"item": 1, "decision": "keep"}}, "review"),
    ("POST", "/v1/reviews/x/reassign", {"json": {"items": [1], "to": "user:bob"}}, "review"),
    ("GET", "/v1/reviews/x/status", {}, "review"),
    ("POST", "/v1/reviews/x/close", {"json": {}}, "review"),
    ("POST", "/v1/tokens", {"json": {"principal": "user:bob", "scopes": ["read"]}}, "admin"),
    ("POST", "/v1/tokens/tok_x/revoke", {}, "admin"),
    ("GET", "/v1/tokens", {}, "admin"),
]
HOLDER = {"change": "bob", "review": "carol", "admin": "admin"}


def call(svc: Running, method: str, path: str, kw: dict, token: str | None) -> httpx.Response:
    return (svc.get if method == "GET" else svc.post)(path, token, **kw)


@pytest.mark.parametrize("method, path, kw, scope", ENDPOINTS)
def test_each_write_endpoint_refuses_missing_revoked_and_expired_tokens_and_other_scopes(svc, method, path, kw, scope):
    before = head(svc)
    missing = call(svc, method, path, kw, None)
    assert missing.status_code == 401 and missing.json()["error"] == "missing"
    assert call(svc, method, path, kw, "not-a-token").json() == {"detail": "unknown token", "error": "unknown"}
    expired = call(svc, method, path, kw, "expired")
    assert expired.status_code == 401 and expired.json()["error"] == "expired"
    if scope == "change":
        revoked = call(svc, method, path, kw, "revoked")
        assert revoked.status_code == 401 and revoked.json()["error"] == "revoked"
    for other in {"change", "review", "admin"} - {scope}:
        refused = call(svc, method, path, kw, HOLDER[other])
        assert refused.status_code == 403 and refused.json()["error"] == "scope", other
        assert f"lacks the scope {scope}" in refused.json()["detail"]
    refused = call(svc, method, path, kw, "read")  # read, audit and report write none of these
    assert refused.status_code == 403 and refused.json()["error"] == "scope"
    assert head(svc) == before


def test_openapi_describes_every_write_endpoint(svc):
    paths = svc.get("/openapi.json", "read").json()["paths"]
    for method, path, _, _ in ENDPOINTS:
        template = path.replace("/x/", "/{name}/").replace("tok_x", "{token_id}")
        assert method.lower() in paths[template], template
    body = paths["/v1/changes"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    kinds = {v["properties"]["type"]["const"] for v in body["oneOf"][0]["oneOf"]}
    assert {"RoleAssigned", "TenantCreated", "TeamMemberAdded"} <= kinds and "ConnectorSecretAccessed" not in kinds
    assert all("actor" not in v["properties"] and "at" not in v["properties"] for v in body["oneOf"][0]["oneOf"])


# -- change ------------------------------------------------------------------------------------


def test_a_change_is_recorded_as_the_tokens_principal(svc):
    made = svc.post(
        "/v1/changes",
        "alice",
        json=[
            {"type": "UserCreated", "user": "frank", "reason": "HR-1"},
            {"type": "RoleAssigned", "role": "viewer", "principal": "user:frank", "tenant": "prod", "id": "c-1"},
        ],
    )
    assert made.status_code == 200, made.text
    got = made.json()
    assert got["written"] == 2 and (got["position"], got["link"]) == head(svc)
    first, second = event_at(svc, got["first"]), event_at(svc, got["last"])
    assert first["actor"] == second["actor"] == "user:alice" and first["reason"] == "HR-1"
    again = svc.post(
        "/v1/changes",
        "alice",
        json={"type": "RoleAssigned", "role": "viewer", "principal": "user:frank", "tenant": "prod", "id": "c-1"},
    )
    assert again.status_code == 200 and again.json()["written"] == 0 and again.json()["skipped"] == 1
    before = head(svc)
    retried = [
        {"type": "RoleAssigned", "role": "viewer", "principal": "user:frank", "tenant": "prod", "id": "c-1"},
        {"type": "TenantCreated", "tenant": "prod"},
    ]
    refused = svc.post("/v1/changes", "alice", json=retried)  # a refusal names its own line, after a skip too
    assert refused.status_code == 400 and refused.json()["detail"].startswith("line 2: ")
    assert head(svc) == before


@pytest.mark.parametrize(
    "body",
    [
        {"type": "TenantCreated", "tenant": "spoofed", "actor": "system"},
        {"type": "TenantCreated", "tenant": "spoofed", "actor": "user:alice"},
        [{"type": "TenantCreated", "tenant": "ok"}, {"type": "TenantCreated", "tenant": "spoofed", "actor": "system"}],
        {"type": "TenantCreated", "tenant": "spoofed", "at": "2026-01-01T00:00:00Z"},
    ],
)
def test_a_change_naming_its_actor_or_time_is_refused_and_nothing_is_written(svc, body):
    before = head(svc)
    refused = svc.post("/v1/changes", "bob", json=body)
    assert refused.status_code == 403 and refused.json()["error"] == "actor"
    field = "at" if "at" in json.dumps(body).replace('"type"', "") and "actor" not in json.dumps(body) else "actor"
    line = "line 2: " if isinstance(body, list) else ""
    assert refused.json()["detail"].startswith(f"{line}{field}: a change is made by the token's principal (user:bob)")
    assert head(svc) == before


@pytest.mark.parametrize(
    "change, lacks",
    [
        ({"type": "RoleAssigned", "role": "admin", "principal": "user:bob", "tenant": "prod"}, "member:update in "),
        ({"type": "TenantCreated", "tenant": "mine"}, "tenant:create in the organization"),
        ({"type": "UserCreated", "user": "mallory"}, "member:create in the organization"),
        ({"type": "TeamCreated", "team": "cabal"}, "team:create in the organization"),
        ({"type": "RoleCreated", "role": "god", "scope": "tenant", "permissions": ["*:*"]}, "role:create in"),
    ],
)
def test_a_change_the_authority_rules_forbid_is_403_naming_the_permission_and_nothing_is_written(svc, change, lacks):
    with AccessLedger.open(svc.url) as led:
        assert not led.enforces_authority  # the service holds `change` writes to the rules all the same
    before = head(svc)
    refused = svc.post("/v1/changes", "bob", json=change)
    assert refused.status_code == 403 and refused.json()["error"] == "authority"
    assert refused.json()["detail"].startswith(f"actor: user:bob lacks {lacks}")
    assert f"(needed for {change['type']};" in refused.json()["detail"]
    assert head(svc) == before


def test_bad_changes_are_400_with_the_imports_words_and_nothing_is_written(svc):
    before = head(svc)
    for body, words in (
        ({"type": "TenantCreated", "tenant": "prod"}, "tenant 'prod' already exists"),
        ([{"type": "TenantCreated", "tenant": "t9"}, {"type": "UserCreated"}], "line 2: user: required field"),
        ({"type": "ConnectorSecretAccessed"}, "type: 'ConnectorSecretAccessed' is not a change"),
        ({"type": "TokenIssued"}, "type: 'TokenIssued' is not a change"),
        ([], "no changes given"),
        ("text", "line is not a JSON object"),
    ):
        refused = svc.post("/v1/changes", "alice", json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert words in refused.json()["detail"], (body, refused.json())
    assert svc.post("/v1/changes", "alice", content=b"{").status_code == 400
    assert head(svc) == before


# -- review ------------------------------------------------------------------------------------


def _items(svc: Running, name: str, who: str, **params) -> list[dict]:
    got = svc.get(f"/v1/reviews/{name}/items", who, params=params)
    assert got.status_code == 200, got.text
    assert (got.json()["position"], got.json()["link"]) == head(svc)
    return got.json()["rows"]


def test_a_review_campaign_through_the_service(svc):
    started = svc.post(
        "/v1/reviews",
        "olivia",
        json={"name": "q1", "tenants": ["prod"], "reviewer": "user:carol", "fallback_reviewer": "user:olivia"},
    )
    assert started.status_code == 200, started.text
    assert event_at(svc, started.json()["position"])["actor"] == "user:olivia"
    mine = _items(svc, "q1", "carol")
    assert mine and all(r["reviewer"] == "user:carol" for r in mine)
    theirs = [r for r in _items(svc, "q1", "olivia") if r["principal"] == "user:carol"]
    assert theirs  # carol's own access goes to the fallback reviewer
    before = head(svc)
    own = svc.post("/v1/reviews/q1/decisions", "carol", json={"item": theirs[0]["item"], "decision": "keep"})
    assert own.status_code == 403 and own.json()["error"] == "review"
    assert own.json()["detail"].startswith(f"user:carol may not decide item {theirs[0]['item']} of review campaign")
    not_owner = svc.post("/v1/reviews/q1/reassign", "carol", json={"items": [mine[0]["item"]], "to": "user:olivia"})
    assert not_owner.status_code == 403
    assert not_owner.json()["detail"].startswith("only the owner of review campaign 'q1' (user:olivia)")
    early = svc.post("/v1/reviews/q1/close", "olivia", json={})
    assert early.status_code == 403 and "undecided" in early.json()["detail"]
    spoof = svc.post("/v1/reviews/q1/decisions", "carol", json={"item": 1, "decision": "keep", "reviewer": "x"})
    assert spoof.status_code == 400 and "reviewer" in spoof.json()["detail"]
    assert head(svc) == before

    decisions = [{"item": r["item"], "decision": "revoke", "reason": "unused"} for r in mine]
    batch = svc.post("/v1/reviews/q1/decisions", "carol", json={"decisions": decisions})
    assert batch.status_code == 200, batch.text
    recorded = [event_at(svc, p) for p in range(batch.json()["first"], batch.json()["last"] + 1)]
    assert {e["actor"] for e in recorded} == {"user:carol"} and len({e["batch"] for e in recorded}) == 1
    assert len(recorded) == len(mine) and not _items(svc, "q1", "carol", open="true")
    status = svc.get("/v1/reviews/q1/status", "olivia").json()
    assert status["summary"]["decided"] == len(mine)
    closed = svc.post("/v1/reviews/q1/close", "olivia", json={"undecided": "keep", "reason": "done"})
    assert closed.status_code == 200, closed.text
    removed = closed.json()["removed"]
    assert len(removed) == len(mine) and all(r["event"]["actor"] == "user:olivia" for r in removed)
    late = svc.post("/v1/reviews/q1/decisions", "olivia", json={"item": theirs[0]["item"], "decision": "keep"})
    assert late.status_code == 403 and "is closed" in late.json()["detail"]
    listed = svc.get("/v1/reviews", "carol").json()["rows"]
    assert [r["status"] for r in listed if r["campaign"] == "q1"] == ["closed"]


def test_a_csv_batch_of_decisions_is_all_or_nothing(svc):
    started = svc.post("/v1/reviews", "olivia", json={"name": "q2", "tenants": ["prod"], "reviewer": "user:olivia"})
    assert started.status_code == 200, started.text
    rows = _items(svc, "q2", "olivia")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["item", "decision", "reason"])
    writer.writerows([[r["item"], "keep", "needed"] for r in rows] + [[rows[0]["item"], "revoke", ""]])
    before = head(svc)
    twice = svc.post("/v1/reviews/q2/decisions", "olivia", content=buf.getvalue(), headers={"Content-Type": "text/csv"})
    assert twice.status_code == 400 and f"item {rows[0]['item']} is given twice" in twice.json()["detail"]
    assert head(svc) == before
    good = "\n".join(buf.getvalue().splitlines()[:-1])
    ok = svc.post("/v1/reviews/q2/decisions", "olivia", content=good, headers={"Content-Type": "text/csv"})
    assert ok.status_code == 200 and ok.json()["written"] == len(rows)
    import hashlib

    assert event_at(svc, ok.json()["first"])["batch_sha256"] == hashlib.sha256(good.encode()).hexdigest()


# -- admin: tokens -----------------------------------------------------------------------------


def test_tokens_are_issued_listed_and_revoked_as_the_admin_tokens_principal(svc):
    issued = svc.post(
        "/v1/tokens", "admin", json={"principal": "user:erin", "scopes": ["review"], "expires_at": "+30d"}
    )
    assert issued.status_code == 200, issued.text
    token, token_id = issued.json()["token"], issued.json()["token_id"]
    recorded = event_at(svc, issued.json()["position"])
    assert recorded["actor"] == "service_account:root" and recorded["principal"] == "user:erin"
    assert token.split(".", 1)[1] not in json.dumps(recorded)
    assert svc.get("/v1/reviews", token).status_code == 200
    listed = svc.get("/v1/tokens", "admin").json()
    row = next(r for r in listed["rows"] if r["token_id"] == token_id)
    assert row["status"] == "active" and row["issued_by"] == "service_account:root"
    assert token.split(".", 1)[1] not in json.dumps(listed) and "secret_sha256" not in json.dumps(listed)
    revoked = svc.post(f"/v1/tokens/{token_id}/revoke", "admin", json={"reason": "left"})
    assert revoked.status_code == 200 and event_at(svc, revoked.json()["position"])["actor"] == "service_account:root"
    assert svc.get("/v1/reviews", token).json()["error"] == "revoked"
    before = head(svc)
    again = svc.post(f"/v1/tokens/{token_id}/revoke", "admin")
    assert again.status_code == 400 and head(svc) == before
    unknown = svc.post("/v1/tokens", "admin", json={"principal": "user:nobody", "scopes": ["read"]})
    assert unknown.status_code == 400 and head(svc) == before


# -- the same changes through HTTP and through api.make_changes ---------------------------------

USERS = ("u1", "u2", "u3")
CHANGE = st.one_of(
    st.builds(lambda u: {"type": "UserCreated", "user": u}, st.sampled_from(USERS)),
    st.builds(lambda u: {"type": "UserDeactivated", "user": u}, st.sampled_from(USERS)),
    st.builds(lambda t: {"type": "TeamCreated", "team": t}, st.sampled_from(("t1", "t2"))),
    st.builds(
        lambda t, u: {"type": "TeamMemberAdded", "team": t, "member": f"user:{u}"},
        st.sampled_from(("t1", "t2")),
        st.sampled_from(USERS),
    ),
    st.builds(
        lambda r, p, kind: {"type": kind, "role": r, "principal": p, "tenant": "prod"},
        st.sampled_from(("viewer", "editor", "admin")),
        st.sampled_from(("user:u1", "user:u2", "team:t1", "user:bob")),
        st.sampled_from(("RoleAssigned", "RoleUnassigned")),
    ),
    st.builds(lambda t: {"type": "TenantCreated", "tenant": t}, st.sampled_from(("dev", "stage"))),
)
REQUEST = st.tuples(st.sampled_from(("alice", "bob")), st.lists(CHANGE, min_size=1, max_size=3))


@pytest.fixture(scope="session", params=BACKENDS)
def twins(request, tmp_path_factory) -> Iterator[tuple[Running, str]]:
    """A service on one ledger, and a second ledger built the same way that api.make_changes writes to."""
    url, schema = make_url(request.param, tmp_path_factory.mktemp(f"twin-api-{request.param}"))
    build(url)
    try:
        for running in _served(tmp_path_factory, request.param, "twin-http"):
            yield running, url
    finally:
        if schema:
            _drop_schema(schema)


def _changes(url: str) -> list[dict]:
    with AccessLedger.open(url) as led:
        events = [e["event"] for e in api.read_events(led, 0, 10_000)["events"]]
    return [{k: v for k, v in e.items() if k != "at"} for e in events if not e["type"].startswith("Token")]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(REQUEST, min_size=1, max_size=4))
def test_changes_through_http_leave_the_state_the_api_functions_leave(twins, requests):
    running, url = twins
    for who, changes in requests:
        body = changes if len(changes) > 1 else changes[0]
        got = running.post("/v1/changes", who, json=body)
        with AccessLedger.open(url) as led:
            try:
                api.make_changes(led, body, actor=f"user:{who}")
                expected = (200, None)
            except LedgerError as exc:
                expected = (403 if type(exc).__name__ == "Unauthorised" else 400, str(exc))
        assert got.status_code == expected[0], (body, got.text, expected)
        if expected[1] is not None:
            assert got.json()["detail"] == expected[1]
    assert _changes(running.url) == _changes(url)


# -- token use, for audit hygiene ----------------------------------------------------------------


def test_a_tokens_first_use_is_recorded_once_and_hygiene_lists_the_tokens_never_used(svc):
    issued = svc.post("/v1/tokens", "admin", json={"principal": "user:erin", "scopes": ["review"]}).json()
    token, token_id = issued["token"], issued["token_id"]

    def never_used() -> list[str]:
        got = svc.get("/v1/audits/hygiene", "read")
        assert got.status_code == 200, got.text
        return [r["what"] for r in got.json()["rows"] if r["finding"] == "token-never-used"]

    assert f"token {token_id}" in never_used()
    assert f"token {svc.tokens['carol'].split('.')[0]}" not in never_used()  # used since the service started
    for _ in range(3):
        assert svc.get("/v1/reviews", token).status_code == 200
    with AccessLedger.open(svc.url) as led:
        uses = [
            e["event"]
            for e in api.read_events(led, issued["position"], 10_000)["events"]
            if e["event"]["type"] == "TokenUsed" and e["event"]["token_id"] == token_id
        ]
    assert len(uses) == 1 and uses[0]["actor"] == "user:erin"
    assert f"token {token_id}" not in never_used()
    before = head(svc)
    forged = {"type": "TokenUsed", "at": format_instant(now()), "actor": "user:alice", "token_id": token_id}
    refused = svc.post("/v1/events", "read", json=forged)  # a report token cannot mark a token used
    assert refused.status_code == 403 and "only the service records a token's use" in refused.json()["detail"]
    assert head(svc) == before
