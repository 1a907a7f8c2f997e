"""The vocabulary, --out's format from the file name, and did-you-mean on the change commands."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.vocabulary import PRESETS, predefined_roles, vocabulary

runner = CliRunner()


def run(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})


@pytest.fixture
def small(ledger_url):
    for step in (
        ["init", "--org", "acme"],
        ["tenant", "create", "prod"],
        ["user", "create", "alice"],
        ["team", "create", "platform"],
        ["role", "assign", "viewer", "--to", "user:alice", "--tenant", "prod"],
    ):
        result = run(ledger_url, *step)
        assert result.exit_code == 0, result.output
    return ledger_url


def test_vocabulary_lists_every_type_action_and_role_of_each_preset(tmp_path):
    result = runner.invoke(app, ["vocabulary", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    for preset in PRESETS:
        v = vocabulary(preset)
        mine = [r for r in rows if r["preset"] == preset]
        assert {(r["name"], r["scope"]) for r in mine if r["kind"] == "type"} == {
            (t, s) for s in ("organization", "tenant") for t in v.types_for(s)
        }
        assert [r["name"] for r in mine if r["kind"] == "action"] == list(v.actions)
        roles = {r["name"]: r for r in mine if r["kind"] == "role"}
        for name, role in predefined_roles(preset).items():
            assert roles[name]["permissions"].split() == list(role.permissions)
            assert roles[name]["scope"] == role.scope


def test_every_listed_type_and_action_is_one_a_custom_role_may_name(small):
    rows = json.loads(run(small, "vocabulary", "--preset", "zenml-pro", "--format", "json").stdout)
    tenant_types = [r["name"] for r in rows if r["kind"] == "type" and r["scope"] == "tenant"]
    actions = [r["name"] for r in rows if r["kind"] == "action"]
    perms = [x for t, a in zip(tenant_types, actions * len(tenant_types)) for x in ("-p", f"{t}:{a}")]
    ok = run(small, "role", "create", "wide", "--scope", "tenant", *perms)
    assert ok.exit_code == 0, ok.output
    # and a name outside the vocabulary is refused: the list is the whole vocabulary
    bad = run(small, "role", "create", "odd", "--scope", "tenant", "-p", "spaceship:read")
    assert bad.exit_code == 2 and "spaceship" in bad.output


def test_vocabulary_refuses_an_unknown_preset_or_kind():
    for args in (["--preset", "zenml-nope"], ["--kind", "verbs"]):
        result = runner.invoke(app, ["vocabulary", *args])
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error:")


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("s.json", lambda text: isinstance(json.loads(text), list)),
        ("s.csv", lambda text: text.startswith("principal,")),
        ("s.md", lambda text: "| principal |" in text),
    ],
)
def test_out_takes_its_format_from_the_extension_and_says_what_it_wrote(small, tmp_path, name, check):
    out = tmp_path / name
    result = run(small, "who-can", "read", "pipeline/x", "--tenant", "prod", "--out", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert check(text), text
    assert "┏" not in text
    assert f"wrote {out}: 1 row as " in result.stderr


def test_out_refuses_a_format_its_extension_contradicts_and_writes_nothing(small, tmp_path):
    out = tmp_path / "s.json"
    for args in (["--format", "csv", "--out", str(out)], ["--out", str(out), "-f", "csv"]):
        result = run(small, "audit", "hygiene", *args)
        assert result.exit_code == 2
        assert "s.json names json output, but --format csv was asked" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists()
    agreeing = run(small, "audit", "hygiene", "--format", "json", "--out", str(out))
    assert agreeing.exit_code == 0 and isinstance(json.loads(out.read_text()), list)


def test_an_unknown_extension_keeps_the_asked_format(small, tmp_path):
    out = tmp_path / "report.txt"
    result = run(small, "what-can", "user:alice", "--tenant", "prod", "--format", "csv", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("role,") or "," in out.read_text().splitlines()[0]


def test_digest_out_says_what_it_wrote(small, tmp_path):
    out = tmp_path / "head.json"
    result = run(small, "digest", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr and json.loads(out.read_text())


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["role", "assign", "veiwer", "--to", "user:alice", "--tenant", "prod"], "did you mean 'viewer'?"),
        (["role", "assign", "viewer", "--to", "user:alise", "--tenant", "prod"], "did you mean 'alice'?"),
        (["role", "assign", "viewer", "--to", "user:alice", "--tenant", "prd"], "did you mean 'prod'?"),
        (["team", "add-member", "platfrom", "user:alice"], "did you mean 'platform'?"),
        (["user", "deactivate", "alicee"], "did you mean 'alice'?"),
    ],
)
def test_change_commands_name_the_closest_recorded_name(small, args, hint):
    from ledger.app import AccessLedger

    before = AccessLedger.open(small)
    try:
        count = before.count()
    finally:
        before.close()
    result = run(small, *args)
    assert result.exit_code == 2, result.output
    assert hint in result.output and len(result.output.strip().splitlines()) == 1
    after = AccessLedger.open(small)
    try:
        assert after.count() == count
    finally:
        after.close()


def test_export_out_says_what_it_wrote(small, tmp_path):
    out = tmp_path / "events.jsonl"
    result = run(small, "export", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert f"wrote {out}: {len(lines)} events as jsonl" in result.stderr
