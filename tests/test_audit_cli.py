"""The audit commands through the CLI: sync first, formats, --out, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from reports.warehouse import Warehouse

runner = CliRunner()


def d(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


@pytest.fixture
def ledger(led, tmp_path):
    led.create_tenant("prod", at=d(1))
    led.create_user("alice", at=d(1))
    led.create_user("bob", at=d(1))
    led.register_connector("aws", "prod", at=d(1))
    led.assign_role("admin", "user:alice", tenant="prod", at=d(2), reason="SEC-1")
    led.record_connector_access("aws", "prod", "user:alice", "allowed", at=d(3))
    led.record_connector_access("aws", "prod", "user:bob", "allowed", at=d(3, 1))
    return led


def run(led: AccessLedger, tmp_path, *args: str):
    return runner.invoke(app, ["--db", led.store.url, *args, "--warehouse", str(tmp_path / "w.duckdb")])


def test_secrets_as_json_names_the_unauthorised_read(ledger, tmp_path):
    result = run(ledger, tmp_path, "audit", "secrets", "--from", d(1), "--to", d(9), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["who"], r["finding"], r["positions"]) for r in rows] == [
        ("user:alice", "authorised", [7, 6]),
        ("user:bob", "unauthorised-access", [8]),
    ]


def test_every_format_and_out_file(ledger, tmp_path):
    out = tmp_path / "review.csv"
    result = run(ledger, tmp_path, "audit", "review", "--at", d(9), "--format", "csv", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["who"], r["where"], r["what"], r["last_used"], r["positions"]) for r in rows] == [
        ("user:alice", "tenant:prod", "*:*", d(3), "6, 1")
    ]
    markdown = run(ledger, tmp_path, "audit", "review", "--at", d(9), "-f", "markdown")
    assert markdown.exit_code == 0
    assert markdown.stdout.startswith("### Access review\n\n| who | where | what |")
    table = run(ledger, tmp_path, "audit", "hygiene", "--at", d(9))
    assert table.exit_code == 0
    assert "Access hygiene" in table.stdout and "self-grant" not in table.stdout


def test_the_audit_syncs_new_events_first(ledger, tmp_path):
    assert run(ledger, tmp_path, "audit", "secrets", "--to", d(9), "-f", "json").exit_code == 0
    ledger.record_connector_access("aws", "prod", "user:bob", "denied", at=d(4))
    rows = json.loads(run(ledger, tmp_path, "audit", "secrets", "--to", d(9), "-f", "json").stdout)
    assert [r["finding"] for r in rows] == ["authorised", "unauthorised-access", "denied"]
    with Warehouse.open(ledger, tmp_path / "w.duckdb") as wh:
        assert wh.pending() == 0


def test_each_audit_command_runs(ledger, tmp_path):
    for command in (["review"], ["least-privilege", "--window", "30d"], ["secrets"], ["sod"], ["changes"], ["hygiene"]):
        result = run(ledger, tmp_path, "audit", *command, "--format", "json")
        assert result.exit_code == 0, (command, result.output)
        assert isinstance(json.loads(result.stdout), list)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["least-privilege", "--window", "ninety"],
            "Error: window: 'ninety' is not a duration like 90d, 12h, 2w, 30min, 3mo or 1y\n",
        ),
        (
            ["least-privilege", "--window", "3m"],
            "Error: window: '3m' is ambiguous: say 3min (minutes) or 3mo (months)\n",
        ),
        (
            ["review", "--at", "lastweek"],
            "Error: at: 'lastweek' is not a time: give 2026-03-15T10:00:00Z, "
            "2026-03-15T10:00 (UTC), 2026-03-15, now, today, yesterday or -7d\n",
        ),
        (["changes", "--period", "2026-Q1", "--from", d(1)], "Error: period: give --period or --from/--to, not both\n"),
        (
            ["secrets", "--period", "2026-Q5"],
            "Error: period: '2026-Q5' is not a period like 2026, 2026-03 or 2026-Q1\n",
        ),
        (
            ["review", "--tenant", "prd"],
            "Error: unknown tenant 'prd': never recorded in this ledger (did you mean prod?)\n",
        ),
        (
            ["review", "--principal", "user:alise"],
            "Error: unknown principal 'user:alise': never recorded in this ledger (did you mean user:alice?)\n",
        ),
        (
            ["review", "--principal", "user:nobody"],
            "Error: unknown principal 'user:nobody': never recorded in this ledger (no recorded name is close)\n",
        ),
        (
            ["changes", "--from", d(5), "--to", d(4)],
            "Error: from: 2026-01-05T00:00:00Z is after to: 2026-01-04T00:00:00Z\n",
        ),
        (["sod", "--rules", "/no/such/rules.toml"], "Error: rules: no file /no/such/rules.toml\n"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(ledger, tmp_path, args, message):
    result = run(ledger, tmp_path, "audit", *args)
    assert result.exit_code == 2
    assert result.stderr == message


def test_a_warehouse_in_a_missing_folder_is_one_clear_error(ledger, tmp_path):
    result = runner.invoke(
        app, ["--db", ledger.store.url, "audit", "review", "--warehouse", str(tmp_path / "nope" / "w.duckdb")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: cannot create the warehouse ")


def test_audit_commands_do_not_slow_down_change_commands():
    # duckdb is imported only when an audit runs: a change command's start-up never pays for it
    code = "import sys, access_ledger.cli; print('duckdb' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_footers_count_what_needs_attention_in_the_reports_words(ledger, tmp_path, monkeypatch):
    """Not "N finding(s)" when most are routine authorised reads (#24 item 11): the report's words."""
    monkeypatch.chdir(tmp_path)  # a PostgreSQL ledger's export keeps its warehouse in the working folder
    for day in (4, 5, 6):
        ledger.record_connector_access("aws", "prod", "user:alice", "allowed", at=d(day))
    result = run(ledger, tmp_path, "audit", "secrets", "--from", d(1), "--to", d(9))
    assert result.exit_code == 0, result.output
    assert "1 need attention, 4 routine;" in result.stdout and "finding(s)" not in result.stdout
    lp = run(ledger, tmp_path, "audit", "least-privilege", "--at", d(9))
    assert lp.exit_code == 0, lp.output
    assert "need attention" in lp.stdout and "finding(s)" not in lp.stdout
    out = tmp_path / "bundle"
    exported = runner.invoke(
        app, ["--db", ledger.store.url, "evidence", "export", "--from", d(1), "--to", d(9), "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((out / "manifest.json").read_text())
    attention = sum(a["needs_attention"] for a in manifest["audits"].values())
    assert manifest["audits"]["secrets"]["routine"] == 4
    assert f"{attention} need attention, " in exported.stdout and "routine" in exported.stdout
    assert "finding(s)" not in exported.stdout
