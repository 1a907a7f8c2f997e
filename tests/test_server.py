"""The service end to end: one real uvicorn on a free loopback port for the session (SQLite), and one on
PostgreSQL when ACCESS_LEDGER_TEST_PG is set; its answers compared with the CLI's for the same questions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger import api
from access_ledger.cli import app as cli_app
from ledger.app import AccessLedger
from ledger.timeutil import format_instant, now
from ledger.tokens import new_token

runner = CliRunner()
AT = "2026-03-01T00:00:00Z"  # questions are asked at a fixed instant, so the CLI and the service agree on it


def cli(url: str, *args: str, stdin: str | None = None):
    return runner.invoke(cli_app, ["--db", url, *args], input=stdin, env={"ACCESS_LEDGER_ACTOR": "system"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    url: str  # the ledger
    base: str  # http://127.0.0.1:PORT
    log: Path
    tokens: dict[str, str]  # name -> token
    process: subprocess.Popen

    def get(self, path: str, token: str | None = "read", headers: dict | None = None, **kw) -> httpx.Response:
        return httpx.get(
            self.base + path, headers={**_auth(self.tokens.get(token, token)), **(headers or {})}, timeout=30, **kw
        )

    def post(self, path: str, token: str | None = "read", headers: dict | None = None, **kw) -> httpx.Response:
        return httpx.post(
            self.base + path, headers={**_auth(self.tokens.get(token, token)), **(headers or {})}, timeout=30, **kw
        )


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def build(url: str) -> dict[str, str]:
    """A small history dated from 2026-01-01, and tokens: live ones per scope, an expired one, one whose
    principal is deactivated, one revoked."""
    tokens: dict[str, str] = {}
    with AccessLedger.open(url, create=True) as led:
        d = "2026-01-01T00:00:00Z"
        led.init(org="acme", at=d)
        led.create_tenant("prod", at=d)
        for user in ("alice", "bob", "carol", "dave"):
            led.create_user(user, at=d)
        for sa in ("ci", "auditor", "platform", "root"):
            led.create_service_account(sa, at=d)
        led.create_team("research", at=d)
        led.add_team_member("research", "user:alice", at="2026-01-02T00:00:00Z")
        led.create_role("ds", "tenant", ["model:promote"], base="editor", at="2026-01-02T00:00:00Z")
        led.assign_role("ds", "team:research", tenant="prod", reason="SEC-7", at="2026-01-03T00:00:00Z")
        led.assign_role(
            "viewer", "user:bob", tenant="prod", expires_at="2026-02-10T00:00:00Z", at="2026-01-03T00:00:00Z"
        )
        led.assign_role("org_viewer", "user:carol", at="2026-01-04T00:00:00Z")
        led.assign_role("admin", "service_account:ci", tenant="prod", resource="model/fraud", at="2026-01-04T00:00:00Z")
        token, token_id, digest = new_token()
        led.append(
            {
                "type": "TokenIssued",
                "at": "2026-01-05T00:00:00Z",
                "actor": "system",
                "token_id": token_id,
                "principal": "service_account:ci",
                "scopes": ["read"],
                "expires_at": "2026-01-06T00:00:00Z",
                "secret_sha256": digest,
            }
        )
        tokens["expired"] = token
        token, token_id, digest = new_token()
        led.append(
            {
                "type": "TokenIssued",
                "at": "2026-01-05T00:00:00Z",
                "actor": "system",
                "token_id": token_id,
                "principal": "user:dave",
                "scopes": ["read"],
                "secret_sha256": digest,
            }
        )
        tokens["inactive"] = token
        led.deactivate_user("dave", at="2026-01-07T00:00:00Z")
        for name, principal, scopes in (
            ("read", "service_account:ci", ["read"]),
            ("report", "service_account:platform", ["report"]),
            ("audit", "service_account:auditor", ["audit"]),
            ("admin", "service_account:root", ["admin", "report"]),
            ("revoked", "service_account:ci", ["read"]),
        ):
            tokens[name] = api.create_token(led, principal, scopes, actor="system")["token"]
        api.revoke_token(led, tokens["revoked"].split(".")[0], actor="system")
    return tokens


def start(url: str, log: Path, tokens: dict[str, str], *extra: str) -> Running:
    port = free_port()
    exe = Path(sys.executable).parent / "access-ledger"
    out = log.open("wb")
    # In the log's folder: a PostgreSQL ledger's audits keep their warehouse in the working folder.
    process = subprocess.Popen(
        [str(exe), "--db", url, "serve", "--port", str(port), *extra],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=log.parent,
        env={**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"},
    )
    running = Running(url, f"http://127.0.0.1:{port}", log, tokens, process)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(running.base + "/healthz", timeout=2).status_code == 200:
                for token in tokens.values():  # each token's first use is recorded now, before any test counts
                    httpx.get(running.base + "/openapi.json", headers=_auth(token), timeout=30)
                return running
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the service did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def stop(running: Running) -> None:
    running.process.terminate()
    try:
        running.process.wait(10)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()


@pytest.fixture(scope="session")
def svc(tmp_path_factory) -> Iterator[Running]:
    """The session's service: started once, on a SQLite ledger."""
    folder = tmp_path_factory.mktemp("service")
    url = str(folder / "ledger.db")
    running = start(url, folder / "server.log", build(url))
    yield running
    stop(running)


# -- tokens and scopes -------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/v1/who-can", {"params": {"action": "read", "resource": "model/x", "tenant": "prod"}}, "read"),
    ("GET", "/v1/what-can", {"params": {"principal": "user:alice"}}, "read"),
    (
        "GET",
        "/v1/explain",
        {"params": {"principal": "user:alice", "action": "read", "resource": "model/x", "tenant": "prod"}},
        "read",
    ),
    (
        "POST",
        "/v1/check",
        {"json": {"principal": "user:alice", "action": "read", "resource": "model/x", "tenant": "prod"}},
        "read",
    ),
    ("GET", "/v1/events", {"params": {"after": 0, "limit": 1}}, "read"),
    ("GET", "/v1/events", {"params": {"after": 0, "limit": 1}}, "audit"),
    ("POST", "/v1/events", {"content": b"[]"}, "report"),
    ("GET", "/openapi.json", {}, "audit"),
    ("GET", "/v1/diff", {"params": {"from": "2026-01-01T00:00:00Z", "to": AT}}, "read"),
    ("GET", "/v1/audits/hygiene", {"params": {"at": AT}}, "audit"),
]


def call(svc: Running, method: str, path: str, kw: dict, token: str | None) -> httpx.Response:
    return (svc.get if method == "GET" else svc.post)(path, token, **kw)


def test_health_and_readiness_need_no_token(svc):
    assert httpx.get(svc.base + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(svc.base + "/readyz").json()
    with AccessLedger.open(svc.url) as led:
        head, _, link = led.store.head()
    assert ready["status"] == "ready" and ready["position"] >= head - 50 and len(ready["link"]) == 64
    assert ready["position"] != head or ready["link"] == link


@pytest.mark.parametrize("method, path, kw, scope", ENDPOINTS)
def test_every_other_path_refuses_a_missing_or_unknown_token(svc, method, path, kw, scope):
    assert call(svc, method, path, kw, scope).status_code == 200
    missing = call(svc, method, path, kw, None)
    assert missing.status_code == 401 and missing.json()["error"] == "missing"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    real = svc.tokens[scope]
    wrong_secret = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for bad in ("not-a-token", "tok_0000000000000000.secret", wrong_secret):
        refused = call(svc, method, path, kw, bad)
        assert refused.status_code == 401, bad
        assert refused.json() == {"detail": "unknown token", "error": "unknown"}


@pytest.mark.parametrize("method, path, kw, scope", ENDPOINTS)
def test_a_token_without_the_scope_is_forbidden(svc, method, path, kw, scope):
    others = (
        {"read", "report", "audit"}
        - {scope}
        - ({"read", "audit"} if path == "/v1/events" and method == "GET" else set())
    )
    if path == "/openapi.json":
        others = set()  # any valid token reads the description
    for other in sorted(others):
        refused = call(svc, method, path, kw, other)
        assert refused.status_code == 403, other
        assert refused.json()["error"] == "scope" and "lacks the scope" in refused.json()["detail"]


@pytest.mark.parametrize(
    "kind, words",
    [
        ("revoked", "revoked token tok_"),
        ("expired", "expired token tok_"),
        ("inactive", "its principal user:dave is deactivated"),
    ],
)
def test_revoked_expired_and_deactivated_tokens_are_refused(svc, kind, words):
    for method, path, kw, _ in ENDPOINTS[:5]:
        refused = call(svc, method, path, kw, svc.tokens[kind])
        assert refused.status_code == 401
        assert refused.json()["error"] == kind and words in refused.json()["detail"]


def test_a_token_revoked_by_the_cli_is_refused_on_the_next_request(svc):
    created = cli(svc.url, "token", "create", "--for", "service_account:auditor", "--scope", "read")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert svc.get("/v1/what-can", token, params={"principal": "user:bob"}).status_code == 200
    assert cli(svc.url, "token", "revoke", token.split(".")[0]).exit_code == 0
    refused = svc.get("/v1/what-can", token, params={"principal": "user:bob"})
    assert refused.status_code == 401 and refused.json()["error"] == "revoked"


# -- the same answers as the CLI ---------------------------------------------------------------

QUESTIONS = [
    ("user:alice", "promote", "model/x", "prod"),
    ("user:bob", "read", "model/x", "prod"),
    ("user:carol", "read", "tenant/prod", None),
    ("service_account:ci", "update", "model/fraud", "prod"),
    ("service_account:ci", "update", "model/other", "prod"),
    ("user:dave", "read", "model/x", "prod"),
    ("team:research", "create", "pipeline/p", "prod"),
]


def _cli_json(url: str, *args: str):
    result = cli(url, *args, "-f", "json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("at", [AT, "2026-01-03T00:00:00Z", "2026-02-10T00:00:00Z"])
def test_check_and_explain_answer_as_the_cli_does(svc, at):
    for principal, action, resource, tenant in QUESTIONS:
        where = ["--tenant", tenant] if tenant else []
        expected = _cli_json(svc.url, "check", principal, action, resource, *where, "--at", at)
        body = {"principal": principal, "action": action, "resource": resource, "tenant": tenant, "at": at}
        got = svc.post("/v1/check", json=body)
        assert got.status_code == 200, got.text
        assert got.json() == expected
        params = {k: v for k, v in body.items() if v is not None}
        assert svc.get("/v1/explain", params=params).json() == _cli_json(
            svc.url, "explain", principal, action, resource, *where, "--at", at
        )


def test_who_can_and_what_can_answer_as_the_cli_does(svc):
    for action, resource, tenant in (
        ("read", "model/x", "prod"),
        ("promote", "model/x", "prod"),
        ("update", "model/fraud", "prod"),
        ("read", "tenant/prod", None),
    ):
        where = ["--tenant", tenant] if tenant else []
        got = svc.get(
            "/v1/who-can",
            params={"action": action, "resource": resource, "at": AT, **({"tenant": tenant} if tenant else {})},
        ).json()
        assert got["rows"] == _cli_json(svc.url, "who-can", action, resource, *where, "--at", AT)
        assert got["at"] == AT and got["position"] > 0 and len(got["link"]) == 64
    for principal in ("user:alice", "user:bob", "user:carol", "service_account:ci", "team:research"):
        got = svc.get("/v1/what-can", params={"principal": principal, "at": AT}).json()
        assert got["rows"] == _cli_json(svc.url, "what-can", principal, "--at", AT)


def test_answers_carry_the_position_and_link_they_were_computed_at(svc):
    got = svc.post(
        "/v1/check",
        json={"principal": "user:alice", "action": "promote", "resource": "model/x", "tenant": "prod", "position": 10},
    ).json()
    with AccessLedger.open(svc.url) as led:
        assert got["position"] == 10 and got["link"] == api.link_at(led, 10)
        with led.store.transaction(write=False) as c:
            c.execute("SELECT link FROM al_chain WHERE position = 10")
            assert got["link"] == c.fetchone()[0]


def test_a_batch_check_answers_as_check_batch(svc, tmp_path):
    questions = [
        {"principal": p, "action": a, "resource": r, **({"tenant": t} if t else {})} for p, a, r, t in QUESTIONS
    ]
    questions[1]["at"] = "2026-02-01T00:00:00Z"
    questions[2]["position"] = 5
    batch = tmp_path / "q.jsonl"
    batch.write_text("".join(json.dumps(q) + "\n" for q in questions))
    result = cli(svc.url, "check", "--batch", str(batch))
    expected = [json.loads(line) for line in result.stdout.splitlines()]
    got = svc.post("/v1/check", json=questions)
    assert got.status_code == 200, got.text
    answers = got.json()["answers"]
    assert [{**a["question"], "allowed": a["allowed"]} for a in answers] == expected
    assert answers[2]["position"] == 5
    bad = svc.post(
        "/v1/check",
        json=[questions[0], {"principal": "user:nobody", "action": "read", "resource": "model/x", "tenant": "prod"}],
    )
    assert bad.status_code == 400 and bad.json()["detail"].startswith("line 2: unknown principal 'user:nobody'")
    assert svc.post("/v1/check", json={"principal": "user:alice"}).status_code == 422


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    principal=st.sampled_from(
        ["user:alice", "user:bob", "user:carol", "user:dave", "service_account:ci", "team:research"]
    ),
    action=st.sampled_from(["read", "update", "promote", "create", "read_secret_value"]),
    resource=st.sampled_from(["model/x", "model/fraud", "pipeline/p", "service_connector/aws", "tenant/prod"]),
    position=st.integers(0, 22),
)
def test_random_questions_get_the_cli_answer(svc, principal, action, resource, position):
    tenant = None if resource.startswith("tenant/") else "prod"
    where = ["--tenant", tenant] if tenant else []
    result = cli(svc.url, "check", principal, action, resource, *where, "--position", str(position), "-f", "json")
    got = svc.post(
        "/v1/check",
        json={"principal": principal, "action": action, "resource": resource, "tenant": tenant, "position": position},
    )
    if result.exit_code == 2:  # refused (a connector never recorded): the same line, as a 400
        assert got.status_code == 400 and result.stderr.strip() == f"Error: {got.json()['detail']}"
    else:
        assert got.status_code == 200 and got.json() == json.loads(result.stdout)


# -- diff and the audits -----------------------------------------------------------------------

AUDIT_CASES = [  # name, the service's parameters, the CLI's options
    (
        "hygiene",
        {"at": AT, "from": "2026-01-01T00:00:00Z", "to": AT},
        ["--at", AT, "--from", "2026-01-01T00:00:00Z", "--to", AT],
    ),
    ("review", {"at": AT, "principal": "user:alice"}, ["--at", AT, "--principal", "user:alice"]),
    ("least-privilege", {"at": AT, "window": "30d"}, ["--at", AT, "--window", "30d"]),
    ("secrets", {"period": "2026-01"}, ["--period", "2026-01"]),
    ("changes", {"from": "2026-01-02T00:00:00Z", "to": AT}, ["--from", "2026-01-02T00:00:00Z", "--to", AT]),
    ("sod", {"at": AT}, ["--at", AT]),
    ("reviews", {"at": AT, "period": "2026-01"}, ["--at", AT, "--period", "2026-01"]),
]


def _head(url: str) -> tuple[int, str]:
    with AccessLedger.open(url) as led:
        head, _, link = led.store.head()
    return head, link


def test_diff_answers_as_the_cli_does_with_the_later_instants_position_and_link(svc):
    for start, end in (
        ("2026-01-01T00:00:00Z", AT),
        ("2026-01-02T12:00:00Z", "2026-02-11T00:00:00Z"),
        ("2026-01-03", "2026-01-03"),
    ):
        got = svc.get("/v1/diff", params={"from": start, "to": end})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["rows"] == _cli_json(svc.url, "diff", "--from", start, "--to", end)
        assert body["rows"] or start == end
        with AccessLedger.open(svc.url) as led:
            assert body["position"] == led.position_at(body["to"]) and body["link"] == api.link_at(
                led, body["position"]
            )
    csv_text = svc.get(
        "/v1/diff", params={"from": "2026-01-01T00:00:00Z", "to": AT}, headers={"Accept": "text/csv"}
    ).text
    assert csv_text == cli(svc.url, "diff", "--from", "2026-01-01T00:00:00Z", "--to", AT, "-f", "csv").stdout
    for params, words in (
        ({"from": "yesterday-ish"}, "from: "),
        ({"from": AT, "to": "2026-01-01T00:00:00Z"}, "to: must not be before --from"),
    ):
        refused = svc.get("/v1/diff", params=params)
        assert refused.status_code == 400 and refused.json()["detail"].startswith(words)
        assert "\n" not in refused.json()["detail"]
    assert svc.get("/v1/diff").status_code == 422


@pytest.mark.parametrize("name, params, options", AUDIT_CASES)
def test_each_audit_answers_as_the_cli_does(svc, name, params, options):
    got = svc.get(f"/v1/audits/{name}", "audit", params=params)
    assert got.status_code == 200, got.text
    body = got.json()
    expected = cli(svc.url, "audit", name, *options, "-f", "json")
    assert expected.exit_code == 0, expected.output
    assert body["rows"] == json.loads(expected.stdout)
    assert body["audit"] == name and body["columns"] and body["title"]
    with AccessLedger.open(svc.url) as led:
        assert 0 < body["position"] <= led.head() and body["link"] == api.link_at(led, body["position"])
    as_csv = svc.get(f"/v1/audits/{name}", "audit", params=params, headers={"Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text == cli(svc.url, "audit", name, *options, "-f", "csv").stdout
    assert int(as_csv.headers["x-ledger-position"]) >= body["position"] and len(as_csv.headers["x-ledger-link"]) == 64


def test_an_audit_refuses_what_the_cli_would_and_what_only_the_cli_may(svc):
    for path, params, words in (
        ("/v1/audits/nope", {}, "no audit named 'nope'"),
        ("/v1/audits/leavers", {}, "no audit named 'leavers'"),
        ("/v1/audits/hygiene", {"window": "30d"}, "window: audit hygiene takes no such parameter"),
        ("/v1/audits/hygiene", {"period": "2026-01", "from": AT}, "period: give --period or --from/--to"),
        ("/v1/audits/least-privilege", {"window": "3m"}, "window: "),
        ("/v1/audits/review", {"principal": "user:nobody"}, "unknown principal 'user:nobody'"),
        ("/v1/audits/hygiene", {"at": "soon"}, "at: "),
    ):
        refused = svc.get(path, "audit", params=params)
        assert refused.status_code == 400, (path, params, refused.text)
        assert refused.json()["detail"].startswith(words) or words in refused.json()["detail"], refused.text
    assert "rules" not in json.dumps(svc.get("/openapi.json", "audit").json()["paths"]["/v1/audits/{name}"])


def test_tables_as_csv_are_the_clis_csv_and_formula_safe(svc):
    assigned = svc.post(
        "/v1/events",
        "report",
        json={
            "type": "RoleAssigned",
            "at": format_instant(now()),
            "actor": "user:carol",
            "role": "viewer",
            "principal": "user:carol",
            "tenant": "prod",
            "resource": "model/formula",
            "reason": '=HYPERLINK("x")',
            "id": "formula-1",
        },
    )
    assert assigned.status_code == 200, assigned.text
    later = format_instant(now())
    for path, params, args in (
        (
            "/v1/who-can",
            {"action": "read", "resource": "model/formula", "tenant": "prod", "at": later},
            ["who-can", "read", "model/formula", "--tenant", "prod", "--at", later],
        ),
        ("/v1/what-can", {"principal": "user:carol", "at": later}, ["what-can", "user:carol", "--at", later]),
    ):
        got = svc.get(path, params=params, headers={"Accept": "application/json;q=0.5, text/csv"})
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        assert got.text == cli(svc.url, *args, "-f", "csv").stdout
        assert "'=HYPERLINK" in got.text and ",=HYPERLINK" not in got.text
        as_json = svc.get(path, params=params).json()
        assert got.headers["x-ledger-position"] == str(as_json["position"])
        assert got.headers["x-ledger-link"] == as_json["link"]


# -- min_position ------------------------------------------------------------------------------


def test_a_read_waits_for_min_position_then_answers_or_says_409(svc):
    import threading

    head, _ = _head(svc.url)
    params = {"principal": "user:alice", "at": AT}
    assert svc.get("/v1/what-can", params={**params, "min_position": head}).status_code == 200
    started = time.monotonic()
    late = svc.get("/v1/what-can", params={**params, "min_position": head + 10_000})
    waited = time.monotonic() - started
    assert late.status_code == 409 and 4.5 <= waited < 15
    assert late.json()["detail"].startswith("min_position: the ledger is at position ") and "\n" not in late.text
    # Refusals of the token come first, without waiting.
    started = time.monotonic()
    assert svc.get("/v1/events", None, params={"min_position": head + 10_000}).status_code == 401
    assert svc.get("/v1/audits/sod", "read", params={"min_position": head + 10_000}).status_code == 403
    assert time.monotonic() - started < 2
    # A write made meanwhile (here by the CLI, as by another worker) ends the wait.
    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(svc.get("/v1/events", "audit", params={"after": head, "min_position": head + 1}))
    )
    waiting.start()
    time.sleep(0.5)
    assert waiting.is_alive()
    written = svc.post("/v1/events", "report", json=_access(40))
    waiting.join(10)
    assert written.status_code == 200 and answers and answers[0].status_code == 200
    page = answers[0].json()
    assert page["position"] >= head + 1 and page["events"][0]["event"]["id"] == "acc-40"
    for path, extra in (
        ("/v1/who-can", {"action": "read", "resource": "model/x", "tenant": "prod"}),
        ("/v1/diff", {"from": "2026-01-01T00:00:00Z"}),
        ("/v1/audits/sod", {}),
    ):
        token = "audit" if "audits" in path else "read"
        assert svc.get(path, token, params={**extra, "min_position": head + 10_000}).status_code == 409, path
    assert (
        svc.post(
            "/v1/check",
            params={"min_position": head + 10_000},
            json={"principal": "user:alice", "action": "read", "resource": "model/x", "tenant": "prod"},
        ).status_code
        == 409
    )
    assert (
        svc.get("/v1/who-can", params={"action": "read", "resource": "model/x", "min_position": -1}).status_code == 422
    )


# -- the log -----------------------------------------------------------------------------------


def _access(n: int, user: str = "alice", outcome: str = "allowed") -> dict:
    return {
        "type": "ResourceAccessed",
        "at": format_instant(now()),
        "actor": "service_account:platform",
        "principal": f"user:{user}",
        "tenant": "prod",
        "resource": f"model/m{n}",
        "action": "read",
        "outcome": outcome,
        "id": f"acc-{n}",
    }


def test_post_events_one_array_or_jsonl_all_or_nothing_and_idempotent(svc):
    with AccessLedger.open(svc.url) as led:
        head = led.head()
    one = svc.post("/v1/events", "report", json=_access(1))
    assert one.status_code == 200, one.text
    assert one.json()["written"] == 1 and one.json()["first"] == head + 1 == one.json()["position"]
    array = svc.post("/v1/events", "report", json=[_access(2), _access(3)])
    assert array.json()["written"] == 2
    jsonl = "\n".join(json.dumps(_access(n)) for n in (4, 5)) + "\n"
    assert svc.post("/v1/events", "report", content=jsonl).json()["written"] == 2
    again = svc.post("/v1/events", "report", content=jsonl).json()
    assert (again["written"], again["skipped"]) == (0, 2)
    before = svc.get("/v1/events", params={"after": 0, "limit": 1}).json()["position"]
    bad_lines = [json.dumps(_access(6)), json.dumps({**_access(7), "tenant": "nope"}), json.dumps(_access(8))]
    refused = svc.post("/v1/events", "report", content="\n".join(bad_lines))
    assert refused.status_code == 400
    assert refused.json() == {"detail": "line 2: tenant: unknown tenant 'nope'"}
    assert svc.get("/v1/events", params={"after": 0, "limit": 1}).json()["position"] == before
    unknown = svc.post("/v1/events", "report", json=[_access(9), {**_access(10), "secret": "x"}])
    assert unknown.status_code == 400 and unknown.json()["detail"].startswith("line 2: secret: unknown field")


def test_post_events_says_what_import_says(svc, tmp_path):
    lines = [
        json.dumps(_access(20)),
        '{"type": "UserCreated", "at": "' + format_instant(now()) + '", "actor": "system"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli(svc.url, "import", str(path))
    assert result.exit_code == 2
    got = svc.post("/v1/events", "report", content="\n".join(lines))
    assert got.status_code == 400 and result.stderr.strip() == f"Error: {got.json()['detail']}"


def test_token_events_need_the_admin_scope(svc):
    _, token_id, digest = new_token()
    minted = {
        "type": "TokenIssued",
        "at": format_instant(now()),
        "actor": "system",
        "token_id": token_id,
        "principal": "service_account:platform",
        "scopes": ["admin"],
        "secret_sha256": digest,
    }
    refused = svc.post("/v1/events", "report", json=[_access(30), minted])
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": f"line 2: token {svc.tokens['report'].split('.')[0]} lacks the scope admin (token events)",
        "error": "scope",
    }
    with AccessLedger.open(svc.url) as led:
        assert token_id not in {e["name"] for e in led.entities("token")}


def test_review_steps_cannot_be_reported_in_a_reviewers_name(svc):
    decided = {
        "type": "ReviewDecided",
        "at": format_instant(now()),
        "actor": "user:alice",
        "campaign": "q1",
        "item": 1,
        "decision": "keep",
        "reviewer": "user:alice",
    }
    for token in ("report", "admin"):
        refused = svc.post("/v1/events", token, content=json.dumps(_access(31)) + "\n" + json.dumps(decided))
        assert refused.status_code == 403
        assert refused.json()["detail"].startswith("line 2: ReviewDecided: review steps are not reported")
    # A text that merely names a type is no token or review event.
    named = svc.post("/v1/events", "report", json={**_access(32), "id": 'acc-32 "ReviewDecided" "TokenIssued"'})
    assert named.status_code == 200, named.text


def test_get_events_pages_through_the_log_as_export_writes_it(svc):
    with AccessLedger.open(svc.url) as led:
        exported = [json.loads(line) for line in led.export_lines()]
    seen, after = [], 0
    while True:
        page = svc.get("/v1/events", "audit", params={"after": after, "limit": 7}).json()
        if not page["events"]:
            break
        assert [e["position"] for e in page["events"]] == list(range(after + 1, after + 1 + len(page["events"])))
        seen += [e["event"] for e in page["events"]]
        after = page["events"][-1]["position"]
    assert seen[: len(exported)] == exported
    assert svc.get("/v1/events", params={"limit": 0}).status_code == 422


# -- what the service must never show ----------------------------------------------------------


def test_the_token_is_never_in_the_events_the_export_or_the_log(svc):
    for name in ("read", "audit", "report", "revoked", "expired"):
        svc.get("/v1/events", name, params={"limit": 1})
    svc.get("/v1/events", "tok_feedfeedfeedfeed.guess", params={"limit": 1})
    with AccessLedger.open(svc.url) as led:
        exported = b"".join(led.export_lines())
    time.sleep(0.2)
    log = svc.log.read_bytes()
    for name, token in svc.tokens.items():
        token_id, secret = token.split(".", 1)
        assert token_id.encode() in exported
        assert secret.encode() not in exported and secret.encode() not in log, name
        assert secret.encode() not in Path(svc.url).read_bytes()
    for name in ("read", "audit", "report"):
        assert f"token={svc.tokens[name].split('.')[0]}".encode() in log
    assert b"guess" not in log
    assert b"Traceback" not in log


def test_workers_serve_and_log_the_token_id(svc, tmp_path):
    running = start(svc.url, tmp_path / "workers.log", svc.tokens, "--workers", "2")
    try:
        for _ in range(4):
            got = running.get("/v1/what-can", params={"principal": "user:alice", "at": AT})
            assert got.status_code == 200
            assert got.json()["rows"] == _cli_json(svc.url, "what-can", "user:alice", "--at", AT)
    finally:
        stop(running)
    log = running.log.read_text()
    assert f"GET /v1/what-can 200 token={svc.tokens['read'].split('.')[0]}" in log
    assert svc.tokens["read"].split(".", 1)[1] not in log


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("ACCESS_LEDGER_TEST_PG"), reason="ACCESS_LEDGER_TEST_PG is not set")
def test_the_service_on_postgresql(tmp_path):
    from tests.conftest import _drop_schema, make_url

    url, schema = make_url("postgres", tmp_path)
    try:
        running = start(url, tmp_path / "server.log", build(url))
        try:
            for principal, action, resource, tenant in QUESTIONS:
                where = ["--tenant", tenant] if tenant else []
                got = running.post(
                    "/v1/check",
                    json={"principal": principal, "action": action, "resource": resource, "tenant": tenant, "at": AT},
                )
                assert got.json() == _cli_json(url, "check", principal, action, resource, *where, "--at", AT)
            written = running.post("/v1/events", "report", json=[_access(1), _access(2)])
            assert written.status_code == 200 and written.json()["written"] == 2
            refused = running.post("/v1/events", "report", content=json.dumps({**_access(3), "tenant": "nope"}))
            assert refused.status_code == 400 and refused.json()["detail"] == "line 1: tenant: unknown tenant 'nope'"
            page = running.get("/v1/events", "audit", params={"after": written.json()["first"] - 1}).json()
            assert [e["event"]["id"] for e in page["events"]] == ["acc-1", "acc-2"]
            assert page["position"] == written.json()["last"]
            assert (
                running.get("/v1/who-can", "report", params={"action": "read", "resource": "tenant/prod"}).status_code
                == 403
            )
            assert running.get("/v1/events", "revoked").json()["error"] == "revoked"
            diff = running.get("/v1/diff", params={"from": "2026-01-01T00:00:00Z", "to": AT}).json()
            assert diff["rows"] == _cli_json(url, "diff", "--from", "2026-01-01T00:00:00Z", "--to", AT)
            hygiene = running.get("/v1/audits/hygiene", "audit", params={"at": AT})
            assert hygiene.status_code == 200, hygiene.text
            assert [r["finding"] for r in hygiene.json()["rows"]].count("token-of-deactivated") == 1
            assert (
                running.get(
                    "/v1/what-can", params={"principal": "user:bob", "min_position": written.json()["last"]}
                ).status_code
                == 200
            )
            assert (
                running.get("/v1/what-can", params={"principal": "user:bob", "min_position": 10_000}).status_code == 409
            )
            with AccessLedger.open(url) as led:
                assert led.verify().ok
                exported = b"".join(led.export_lines())
            log = running.log.read_bytes()
            for token in running.tokens.values():
                assert token.split(".", 1)[1].encode() not in exported + log
        finally:
            stop(running)
    finally:
        if schema:
            _drop_schema(schema)
