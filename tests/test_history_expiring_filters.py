"""history PRINCIPAL, audit expiring, and the --principal/--tenant/--connector/--role filters of every audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from access_ledger import api
from access_ledger.cli import app
from ledger.app import AccessLedger
from tests.conftest import BACKENDS, _drop_schema, make_url

runner = CliRunner()
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(url: str, *args: str, actor: str = "system"):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": actor})


def ok(url: str, *args: str, actor: str = "system"):
    result = run(url, *args, actor=actor)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module", params=BACKENDS)
def story(request, tmp_path_factory):
    """alice joins a team that already holds viewer; the team then gets editor; alice grants bob a role that
    expires in 2 days and carol one that expires in 20; alice reads a secret; a review covers alice.
    Built once per backend: every test here only reads it."""
    url, schema = make_url(request.param, tmp_path_factory.mktemp("story"))
    try:
        yield _build(url)
    finally:
        if schema:
            _drop_schema(schema)


def _build(url: str) -> str:
    steps = [
        (0, ["init", "--org", "acme"]),
        (0, ["tenant", "create", "prod"]),
        (0, ["tenant", "create", "dev"]),
        (0, ["user", "create", "alice"]),
        (0, ["user", "create", "bob"]),
        (0, ["user", "create", "carol"]),
        (0, ["user", "create", "erin"]),
        (0, ["team", "create", "platform"]),
        (0.1, ["role", "assign", "viewer", "--to", "team:platform", "--tenant", "prod", "--reason", "T-1"]),
        (0.2, ["team", "add-member", "platform", "user:alice", "--reason", "T-2"]),
        (0.3, ["role", "assign", "editor", "--to", "team:platform", "--tenant", "dev", "--reason", "T-3"]),
        (0.4, ["role", "assign", "org_admin", "--to", "user:alice", "--reason", "T-4"]),
        (0.5, ["connector", "register", "aws-prod", "--tenant", "prod", "--type", "aws"]),
        (0.5, ["connector", "register", "aws-dev", "--tenant", "dev", "--type", "aws"]),
    ]
    for day, args in steps:
        ok(url, *args, "--at", at(day))
    for day, args in [
        (
            1,
            [
                "role",
                "assign",
                "admin",
                "--to",
                "user:bob",
                "--tenant",
                "prod",
                "--expires-at",
                at(3),
                "--reason",
                "C-1",
            ],
        ),
        (1, ["role", "assign", "viewer", "--to", "user:carol", "--tenant", "dev", "--expires-at", at(21)]),
        (1, ["role", "assign", "editor", "--to", "user:carol", "--tenant", "prod"]),
    ]:
        ok(url, *args, "--at", at(day), actor="user:alice")
    ok(
        url,
        "connector",
        "access",
        "aws-prod",
        "--tenant",
        "prod",
        "--by",
        "user:bob",
        "--outcome",
        "allowed",
        "--at",
        at(1.5),
    )
    ok(
        url,
        "connector",
        "access",
        "aws-dev",
        "--tenant",
        "dev",
        "--by",
        "user:alice",
        "--outcome",
        "allowed",
        "--at",
        at(1.6),
    )
    ok(url, "review", "start", "R1", "--tenant", "dev", "--reviewer", "user:erin", "--at", at(2))
    items = json.loads(ok(url, "review", "items", "R1", "-f", "json").stdout)
    mine = [i for i in items if i["principal"] == "user:alice"]
    assert mine, items
    ok(
        url,
        "review",
        "decide",
        "R1",
        str(mine[0]["item"]),
        "keep",
        "--reason",
        "needed",
        actor="user:erin",
    )
    return url


def history(url: str, *args: str) -> list[dict]:
    return json.loads(ok(url, "history", *args, "-f", "json").stdout)


def test_history_names_how_each_event_concerns_the_person(story):
    rows = history(story, "user:alice")
    kinds = [(r["type"], r["concerns"]) for r in rows]
    assert ("UserCreated", "account") in kinds
    assert ("RoleAssigned", "via team:platform") in kinds  # editor in dev, given to the team after she joined
    joined = [r for r in rows if r["type"] == "TeamMemberAdded"]
    assert len(joined) == 1 and "gives: viewer in prod" in joined[0]["detail"]
    assert ("RoleAssigned", "subject") in kinds  # org_admin
    assert [r["detail"] for r in rows if r["type"] == "RoleAssigned" and r["concerns"] == "by"] == [
        "role=admin principal=user:bob tenant=prod expires_at=" + at(3),
        "role=viewer principal=user:carol tenant=dev expires_at=" + at(21),
        "role=editor principal=user:carol tenant=prod",
    ]
    assert ("ConnectorSecretAccessed", "subject") in kinds
    assert any(t == "ReviewStarted" and c == "review item" for t, c in kinds)
    decided = [r for r in rows if r["type"] == "ReviewDecided"]
    assert len(decided) == 1 and decided[0]["concerns"] == "review decision" and decided[0]["actor"] == "user:erin"
    # the viewer grant to the team before she joined is not hers to answer for: it shows in the join's detail
    assert not any(
        r["type"] == "RoleAssigned" and "viewer" in r["detail"] and "team:platform" in r["detail"] for r in rows
    )
    positions = [r["position"] for r in rows]
    assert positions == sorted(positions)


def test_history_is_everything_naming_the_person_in_the_export(story):
    """Oracle: every exported event whose fields name alice (as actor, principal, member, user or reviewer)."""
    lines = [json.loads(line) for line in ok(story, "export").stdout.splitlines()]
    naming = {
        i + 1
        for i, ev in enumerate(lines)
        if "user:alice" in (ev.get("actor"), ev.get("principal"), ev.get("member"), ev.get("reviewer"))
        or ev.get("user") == "alice"
    }
    got = {r["position"] for r in history(story, "user:alice")}
    assert naming <= got
    extra = {r["position"]: r["concerns"] for r in history(story, "user:alice") if r["position"] not in naming}
    assert set(extra.values()) <= {"via team:platform", "review item", "review decision"}, extra


def test_history_range_type_and_refusals(story):
    rows = history(story, "user:alice", "--from", at(1), "--to", at(1.55))
    assert rows and all(at(1) <= r["at"] <= at(1.55) for r in rows)
    only = history(story, "user:alice", "--type", "ConnectorSecretAccessed")
    assert [r["type"] for r in only] == ["ConnectorSecretAccessed"]
    for args, words in (
        (["user:alise"], "did you mean user:alice?"),
        (["user:alice", "--type", "RoleAsigned"], "did you mean RoleAssigned"),
        (["alice"], "principal"),
    ):
        result = run(story, "history", *args)
        assert result.exit_code == 2 and words in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def expiring(url: str, *args: str) -> list[dict]:
    return json.loads(ok(url, "audit", "expiring", *args, "-f", "json").stdout)


def filtered(result, **filters: str) -> list[dict]:
    """The rows of a filtered audit's JSON (a list, as unfiltered); stderr says what it was filtered by."""
    words = ", ".join(f"{k} {v}" for k, v in filters.items())
    assert f"Filtered: {words} only; rows outside this scope are not listed" in result.stderr
    return json.loads(result.stdout)


def test_expiring_lists_each_time_bound_grant_ending_in_the_window(story):
    soon = expiring(story, "--at", at(1.7), "--within", "7d")
    assert [(r["who"], r["role"], r["where"], r["expires_at"]) for r in soon] == [
        ("user:bob", "admin", "tenant:prod", at(3))
    ]
    assert soon[0]["granted_by"] == "user:alice" and soon[0]["grant_reason"] == "C-1"
    assert soon[0]["last_used"] == at(1.5) and soon[0]["ends_in"] == "1d 7h 12min"
    both = expiring(story, "--at", at(1.7), "--within", "30d")
    assert [r["who"] for r in both] == ["user:bob", "user:carol"]
    assert expiring(story, "--at", at(3), "--within", "1d") == []  # ended at 3: not after --at
    dev = ok(story, "audit", "expiring", "--at", at(1.7), "--within", "30d", "--tenant", "dev", "-f", "json")
    assert [r["who"] for r in filtered(dev, tenant="dev")] == ["user:carol"]


def test_expiring_agrees_with_the_review_audit(story):
    """Oracle: the review audit's rows at the same instant whose expires_at falls in the window, one per grant."""
    for day, within, span in ((1.2, "2d", 2), (1.7, "30d", 30), (0.5, "7d", 7)):
        rows = json.loads(ok(story, "audit", "review", "--at", at(day), "-f", "json").stdout)
        want = {
            (r["who"], r["where"], r["role"], r["via_team"], r["expires_at"])
            for r in rows
            if r["expires_at"] and at(day) < r["expires_at"] <= at(day + span)
        }
        got = {
            (r["who"], r["where"], r["role"], r["via_team"], r["expires_at"])
            for r in expiring(story, "--at", at(day), "--within", within)
        }
        assert got == want


AUDIT_ARGS = {
    "review": ["--at", at(2.2)],
    "least-privilege": ["--at", at(2.2)],
    "secrets": [],
    "sod": [],
    "changes": [],
    "hygiene": [],
    "reviews": [],
    "authority": [],
}


@pytest.mark.parametrize("name", sorted(AUDIT_ARGS))
def test_every_audit_filters_by_principal_and_tenant_as_its_rows_say(story, name):
    base = AUDIT_ARGS[name]
    every = json.loads(ok(story, "audit", name, *base, "-f", "json").stdout)
    for who in ("user:alice", "user:bob", "user:carol"):
        got = filtered(ok(story, "audit", name, *base, "--principal", who, "-f", "json"), principal=who)
        assert got == [r for r in every if r["who"] == who]
    for tenant in ("prod", "dev"):
        got = filtered(ok(story, "audit", name, *base, "--tenant", tenant, "-f", "json"), tenant=tenant)
        assert got == [r for r in every if r["where"] == f"tenant:{tenant}"]


def test_connector_and_role_filters(story):
    every = json.loads(ok(story, "audit", "secrets", "-f", "json").stdout)
    assert {r["connector"] for r in every} == {"aws-prod", "aws-dev"}
    got = filtered(ok(story, "audit", "secrets", "--connector", "aws-prod", "-f", "json"), connector="aws-prod")
    assert got == [r for r in every if r["connector"] == "aws-prod"] and got
    rev = json.loads(ok(story, "audit", "review", "--at", at(2.2), "-f", "json").stdout)
    got = filtered(ok(story, "audit", "review", "--at", at(2.2), "--role", "editor", "-f", "json"), role="editor")
    assert got == [r for r in rev if r["role"] == "editor"] and got
    for args, words in (
        (["secrets", "--connector", "aws-prd"], "did you mean aws-prod"),
        (["secrets", "--connector", "aws-prod", "--tenant", "dev"], "in tenant 'dev'"),
        (["review", "--role", "editr"], "did you mean editor"),
        (["sod", "--connector", "aws-prod"], "No such option"),
        (["hygiene", "--tenant", "prd"], "did you mean prod"),
    ):
        result = run(story, "audit", *args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1


def test_the_service_function_takes_the_same_filters(story):
    led = AccessLedger.open(story)
    try:
        got = api.audit(led, "secrets", connector="aws-dev")
        assert got["params"]["connector"] == "aws-dev"
        assert {r["connector"] for r in got["rows"]} == {"aws-dev"}
        with pytest.raises(Exception, match="takes no such parameter"):
            api.audit(led, "sod", connector="aws-dev")
    finally:
        led.close()
