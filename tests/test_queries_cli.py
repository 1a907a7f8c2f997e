"""The query commands through the CLI: exit codes, formats, batch answers in order."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app

runner = CliRunner()


def run(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})  # a recorded actor


@pytest.fixture
def q(ledger_url):
    steps = [
        ["init", "--at", "2026-01-01T00:00:00Z"],
        ["tenant", "create", "prod", "--at", "2026-01-01T00:00:00Z"],
        ["user", "create", "alice", "--at", "2026-01-01T00:00:00Z"],
        ["user", "create", "bob", "--at", "2026-01-01T00:00:00Z"],
        ["team", "create", "research", "--at", "2026-01-01T00:00:00Z"],
        ["team", "add-member", "research", "user:alice", "--at", "2026-01-02T00:00:00Z"],
        ["role", "create", "ds", "--base", "editor", "-p", "model:promote", "--at", "2026-01-02T00:00:00Z"],
        [
            "role",
            "assign",
            "ds",
            "--to",
            "team:research",
            "--tenant",
            "prod",
            "--reason",
            "SEC-7",
            "--at",
            "2026-01-03T00:00:00Z",
        ],
        [
            "role",
            "assign",
            "viewer",
            "--to",
            "user:bob",
            "--tenant",
            "prod",
            "--expires-at",
            "2026-01-10T00:00:00Z",
            "--at",
            "2026-01-03T00:00:00Z",
        ],
    ]
    for step in steps:
        result = run(ledger_url, *step)
        assert result.exit_code == 0, result.output
    return ledger_url


def test_check_exits_0_when_allowed_and_1_when_denied(q):
    allowed = run(q, "check", "user:alice", "promote", "model/fraud", "--tenant", "prod")
    assert allowed.exit_code == 0
    assert allowed.stdout.startswith("allowed: user:alice may promote model/fraud in tenant prod")
    denied = run(q, "check", "user:bob", "promote", "model/fraud", "--tenant", "prod")
    assert denied.exit_code == 1
    assert denied.stdout.startswith("denied: user:bob may not promote model/fraud in tenant prod")


def test_check_at_a_past_instant_and_at_a_position(q):
    before = run(q, "check", "user:alice", "promote", "model/x", "--tenant", "prod", "--at", "2026-01-02T23:59:59Z")
    assert before.exit_code == 1
    at = run(q, "check", "user:alice", "promote", "model/x", "--tenant", "prod", "--at", "2026-01-03T00:00:00Z")
    assert at.exit_code == 0
    assert run(q, "check", "user:alice", "promote", "model/x", "--tenant", "prod", "--position", "7").exit_code == 1
    assert run(q, "check", "user:alice", "promote", "model/x", "--tenant", "prod", "--position", "8").exit_code == 0
    expired = run(q, "check", "user:bob", "read", "model/x", "--tenant", "prod", "--at", "2026-01-10T00:00:00Z")
    assert expired.exit_code == 1
    assert "role viewer expired at 2026-01-10T00:00:00Z" in expired.stdout


def test_check_json_gives_the_answer_and_the_path(q):
    result = run(q, "check", "user:alice", "read", "model/x", "--tenant", "prod", "--format", "json")
    assert result.exit_code == 0
    answer = json.loads(result.stdout)
    assert answer["allowed"] is True
    assert answer["paths"][0]["via_team"] == "research"
    assert answer["paths"][0]["links"][1]["reason"] == "SEC-7"


def test_check_batch_answers_each_line_in_order(q, tmp_path):
    batch = tmp_path / "q.jsonl"
    batch.write_text(
        '{"principal": "user:bob", "action": "read", "resource": "model/x", "tenant": "prod"}\n'
        '{"principal": "user:alice", "action": "promote", "resource": "model/x", "tenant": "prod", '
        '"at": "2026-01-02T00:00:00Z"}\n'
        '{"principal": "user:alice", "action": "promote", "resource": "model/x", "tenant": "prod", "position": 8}\n'
        '{"principal": "user:bob", "action": "read", "resource": "model/x", "tenant": "prod", '
        '"at": "2026-01-05T00:00:00Z"}\n'
    )
    result = run(q, "check", "--batch", str(batch))
    assert result.exit_code == 1  # some are denied
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["allowed"] for a in answers] == [False, False, True, True]
    assert answers[1]["at"] == "2026-01-02T00:00:00Z"


def test_check_batch_bad_line_is_one_error(q, tmp_path):
    batch = tmp_path / "q.jsonl"
    batch.write_text(
        '{"principal": "user:bob", "action": "read", "resource": "model/x", "tenant": "prod"}\n'
        '{"principal": "user:bob", "action": "read"}\n'
    )
    result = run(q, "check", "--batch", str(batch))
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: line 2: resource: required text field is missing"
    assert result.stdout == ""


def test_who_can_what_can_explain_diff(q):
    who = json.loads(run(q, "who-can", "promote", "model/x", "--tenant", "prod", "-f", "json").stdout)
    assert [(r["principal"], r["via_team"]) for r in who] == [("user:alice", "research")]
    what = json.loads(
        run(q, "what-can", "user:bob", "--tenant", "prod", "--at", "2026-01-05T00:00:00Z", "-f", "json").stdout
    )
    assert [(r["permission"], r["expires_at"]) for r in what] == [("*:read", "2026-01-10T00:00:00Z")]
    explained = run(q, "explain", "user:alice", "promote", "model/x", "--tenant", "prod", "-f", "csv")
    assert explained.exit_code == 0
    assert "user:alice is a member of team:research" in explained.stdout
    changes = json.loads(
        run(q, "diff", "--from", "2026-01-02T12:00:00Z", "--to", "2026-01-11T00:00:00Z", "-f", "json").stdout
    )
    assert {(r["principal"], r["change"]) for r in changes} == {("user:alice", "gained")}


def test_bad_questions_are_one_line_errors(q):
    result = run(q, "check", "user:alice", "fly", "model/x", "--tenant", "prod")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: action: 'fly' is not an action of the zenml-pro preset"
    result = run(q, "who-can", "read", "nonsense", "--tenant", "prod")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: resource: 'nonsense' is not TYPE/ID"


def test_casbin_export_writes_model_and_policy(q, tmp_path):
    result = run(q, "export", "--format", "casbin", "--out", str(tmp_path / "c"))
    assert result.exit_code == 0
    policy = (tmp_path / "c" / "policy.csv").read_text()
    assert "p,role:ds,*,model,promote" in policy
    assert "g,team:research,role:ds,prod" in policy
    assert "g,user:alice,team:research,prod" in policy
    assert (tmp_path / "c" / "model.conf").read_text().startswith("[request_definition]")
