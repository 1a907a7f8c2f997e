"""Triage over HTTP (real uvicorn, SQLite and PostgreSQL): POST /v1/findings/{id}/accept|suppress|reopen and
/v1/findings/rules as the token's principal, held to the authority rules; GET /v1/findings for read/audit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import BACKENDS, _drop_schema, make_url
from test_findings import _story, zoe_id
from test_server import Running, start, stop

from access_ledger import api
from ledger.app import AccessLedger
from ledger.findings import rule_id


def _tokens(url: str) -> dict[str, str]:
    with AccessLedger.open(url) as led:
        return {
            name: api.create_token(led, principal, scopes, actor="system")["token"]
            for name, principal, scopes in (
                ("admin", "user:admin", ["change"]),  # org_admin: holds member:update
                ("vic", "user:vic", ["change"]),  # org_viewer: does not
                ("zoe", "user:zoe", ["change"]),  # org_admin, but the self-grant finding is about her
                ("read", "user:vic", ["read"]),
                ("audit", "user:vic", ["audit"]),
            )
        }


@pytest.fixture(scope="session", params=BACKENDS)
def served(request, tmp_path_factory) -> Iterator[tuple[Running, dict[str, int]]]:
    """One service per backend for the session, on the story of tests/test_findings.py."""
    folder = tmp_path_factory.mktemp(f"findings-{request.param}")
    url, schema = make_url(request.param, folder)
    positions = _story(url)
    running = start(url, folder / "server.log", _tokens(url))
    try:
        yield running, positions
    finally:
        stop(running)
        if schema:
            _drop_schema(schema)


def head(svc: Running) -> int:
    with AccessLedger.open(svc.url) as led:
        return led.head()


def event_at(svc: Running, position: int) -> dict:
    with AccessLedger.open(svc.url) as led:
        return next(ev for _, ev in led.read(position, position))


def listed(svc: Running, token: str = "read", **params: str) -> dict[str, str]:
    got = svc.get("/v1/findings", token, params=params)
    assert got.status_code == 200, got.text
    return {r["finding_id"]: r["state"] for r in got.json()["rows"]}


def test_the_list_is_for_read_and_audit_tokens_only(served):
    svc, pos = served
    assert listed(svc, "read", audit="hygiene")[zoe_id(pos)] == "open"
    assert zoe_id(pos) in listed(svc, "audit", state="all")
    refused = svc.get("/v1/findings", "admin")
    assert refused.status_code == 403 and refused.json()["error"] == "scope"
    bad = svc.get("/v1/findings", "read", params={"audit": "nope"})
    assert bad.status_code == 400 and "has no findings to list" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("token", "body", "error", "words"),
    [
        ("vic", {"reason": "x"}, "authority", "lacks member:update in the organization"),
        ("zoe", {"reason": "x"}, "authority", "may not accept a finding about themselves"),
        ("admin", {"reason": "x", "actor": "user:vic"}, "actor", "actor: a triage decision is made by"),
        ("admin", {"reason": "x", "at": "2026-01-01T00:00:00Z"}, "actor", "at: a triage decision is made by"),
        ("read", {"reason": "x"}, "scope", "lacks the scope change"),
    ],
)
def test_refused_decisions_are_403_and_write_nothing(served, token, body, error, words):
    svc, pos = served
    before = head(svc)
    refused = svc.post(f"/v1/findings/{zoe_id(pos)}/accept", token, json=body)
    assert refused.status_code == 403 and refused.json()["error"] == error, refused.text
    assert words in refused.json()["detail"]
    assert head(svc) == before


def test_accept_suppress_reopen_and_rules_are_recorded_as_the_tokens_principal(served):
    svc, pos = served
    fid = zoe_id(pos)
    done = svc.post(f"/v1/findings/{fid}/accept", "admin", json={"reason": "SEC-88", "until": "+30d"})
    assert done.status_code == 200, done.text
    got = done.json()
    assert (got["state"], got["principal"], got["position"]) == ("accepted", "user:zoe", head(svc))
    event = event_at(svc, got["position"])
    assert (event["type"], event["actor"], event["finding"], event["reason"]) == (
        "FindingAccepted",
        "user:admin",
        fid,
        "SEC-88",
    )
    assert listed(svc, state="accepted") == {fid: "accepted"}
    reopened = svc.post(f"/v1/findings/{fid}/reopen", "admin", json={"reason": "re-review"})
    assert reopened.status_code == 200 and event_at(svc, reopened.json()["position"])["type"] == "FindingReopened"
    assert listed(svc, audit="hygiene")[fid] == "open"
    suppressed = svc.post(f"/v1/findings/{fid}/suppress", "admin", json={"reason": "noise"})
    assert suppressed.status_code == 200 and suppressed.json()["state"] == "suppressed"
    assert svc.post(f"/v1/findings/{fid}/reopen", "admin", json={"reason": "not noise"}).status_code == 200
    rule = svc.post(
        "/v1/findings/rules", "admin", json={"rule": "hygiene/self-grant", "principal": "user:zoe", "reason": "boot"}
    )
    assert rule.status_code == 200, rule.text
    assert rule.json()["rule"] == rule_id("hygiene", "self-grant", "user:zoe", None)
    assert event_at(svc, rule.json()["position"])["actor"] == "user:admin"
    assert listed(svc, state="suppressed") == {fid: "suppressed"}
    assert svc.post(f"/v1/findings/{rule.json()['rule']}/reopen", "admin", json={"reason": "r"}).status_code == 200
    assert listed(svc, audit="hygiene")[fid] == "open"


def test_a_rule_about_oneself_and_an_unknown_id_are_refused(served):
    svc, pos = served
    before = head(svc)
    mine = svc.post(
        "/v1/findings/rules", "zoe", json={"rule": "hygiene/self-grant", "principal": "user:zoe", "reason": "me"}
    )
    assert mine.status_code == 403 and mine.json()["error"] == "authority"
    unknown = svc.post("/v1/findings/F-0000000000000000/accept", "admin", json={"reason": "x"})
    assert unknown.status_code == 400 and "no audit reports a finding" in unknown.json()["detail"]
    assert head(svc) == before
