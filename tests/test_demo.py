"""The demo: the first thing a new user runs. It must find exactly what was planted, quickly."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from access_ledger.cli.demo import LEAVER_FINDINGS, TERMINATIONS
from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from reports.evidence import needs_attention, verify_bundle

runner = CliRunner()
END = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("demo")
    db, evidence = folder / "demo.db", folder / "demo-evidence"
    result = runner.invoke(app, ["demo", "--db", str(db), "--evidence", str(evidence), "--end", END.isoformat()])
    return result, db, evidence


def test_demo_finds_every_planted_incident_and_nothing_else(demo_run):
    result, db, evidence = demo_run
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "verify: intact" in out
    assert "12 of 12 planted incidents found by their audits; nothing else flagged" in out
    hr = db.parent / TERMINATIONS
    assert (
        f"HR leavers file: {hr} (3 leavers, read by `audit leavers --hr`; in the bundle as hr/hr.csv, reconciled "
        "by its leavers audit)"
    ) in out
    seconds = float(re.search(r"done in ([\d.]+) s", out).group(1))
    assert seconds <= 60
    # The file count the demo prints is the bundle's, and the README's.
    files = len(json.loads((evidence / "manifest.json").read_text())["files"])
    assert f"({files} files and manifest.json, report:" in out
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert f"({files} files and manifest.json, report:" in readme and f'says "{files} files match"' in readme
    assert verify_bundle(evidence).ok
    # The accepted finding is in the bundle the demo exported just after accepting it.
    assert "audits/findings.csv: 1 accepted)" in out
    assert json.loads((evidence / "manifest.json").read_text())["findings"]["accepted"] == 1

    scenario = generate("small", END)
    scenario.events()  # runs the generator: incidents are complete
    incidents = scenario.incidents
    assert {i.kind for i in incidents} == {
        "unauthorised-secret-read",
        "self-grant",
        "sod-conflict",
        "dormant-admin",
        "expired-grant-not-revoked",
        "change-without-reason",
        "deactivated-with-grants",
        "rubber-stamp-review",
        "revocation-not-carried-out",
        "late-leaver",
        "unauthorised-change",
        "change-by-leaver",
    }
    by_kind = {i.kind: i for i in incidents}
    assert (
        f"audit authority: 2 of 2 planted changes by actors not allowed to make them found (change-by-inactive-actor "
        f"by user:rafael at position {by_kind['change-by-leaver'].position}, unauthorised-change by user:jun at "
        f"position {by_kind['unauthorised-change'].position}); nothing else flagged by it"
    ) in out
    # The HR file lists the year's leavers, as the scenario terminated them.
    assert hr.read_text() == scenario.terminations_csv()
    assert [line.split(",")[0] for line in hr.read_text().splitlines()] == [
        "person",
        "user:rafael",
        "user:bjorn",
        "user:mei",
    ]
    # Each audit's JSON file holds its findings needing attention (every row is in its CSV and Parquet files).
    rows = {
        name: json.loads((evidence / "audits" / f"{name}.json").read_text())["findings"]
        for name in ("review", "least-privilege", "secrets", "sod", "changes", "hygiene", "reviews", "authority")
    }
    from reports.leavers import run_leavers
    from reports.warehouse import Warehouse

    with AccessLedger.open(str(db)) as led, Warehouse.open(led) as wh:
        rows["leavers"] = [r for r in run_leavers(wh, str(hr), sla="24h").rows if r.get("finding") in LEAVER_FINDINGS]
    # The bundle carries the HR file (hr/hr.csv, its SHA-256 in the manifest) and the same leavers findings.
    manifest = json.loads((evidence / "manifest.json").read_text())
    assert (evidence / "hr" / "hr.csv").read_bytes() == hr.read_bytes()
    assert manifest["hr"]["sha256"] == hashlib.sha256(hr.read_bytes()).hexdigest()
    assert json.loads((evidence / "audits" / "leavers.json").read_text())["findings"] == rows["leavers"]

    def attention(name: str, row: dict) -> bool:
        return name == "leavers" or needs_attention(name, row)

    def shows(row: dict, incident) -> bool:
        return row.get("who") == incident.principal or incident.position in (row.get("positions") or [])

    expected = {
        "unauthorised-secret-read": "unauthorised-access",
        "self-grant": "self-grant",
        "dormant-admin": "dormant-principal",
        "expired-grant-not-revoked": "expired-not-revoked",
        "change-without-reason": "change-without-reason",
        "deactivated-with-grants": "grant-to-deactivated",
        # A rubber stamp keeps everything: both rows name the reviewer.
        "rubber-stamp-review": {"rubber-stamp", "all-keep"},
        "revocation-not-carried-out": "revocation-not-carried-out",
        "late-leaver": "late-deactivation",
        "unauthorised-change": "unauthorised-change",
        "change-by-leaver": "change-by-inactive-actor",
    }
    # The demo accepts the self-grant: the bundle carries it in audits/findings.csv, out of the hygiene rows.
    with (evidence / "audits" / "findings.csv").open(newline="") as f:
        triaged = list(csv.DictReader(f))
    assert [(r["audit"], r["kind"], r["who"], r["finding_state"]) for r in triaged] == [
        ("hygiene", "self-grant", by_kind["self-grant"].principal, "accepted")
    ]
    for incident in incidents:
        if incident.kind == "self-grant":
            assert not [r for r in rows["hygiene"] if r.get("finding") == "self-grant"]
            continue
        found = [r for r in rows[incident.audit] if attention(incident.audit, r) and shows(r, incident)]
        assert found, f"{incident.kind} of {incident.principal} not in the {incident.audit} audit"
        if incident.kind in expected:
            want = expected[incident.kind]
            assert {r["finding"] for r in found} == (want if isinstance(want, set) else {want}), incident
    hana = [r for r in rows["sod"] if r["who"] == "user:hana"]
    assert [(r["rule"], r["tenant"]) for r in hana] == [("build-and-promote", "production")]
    # Nothing is reported as a violation that was not planted (the dormant admin's full control shows in sod too).
    for name, audit_rows in rows.items():
        for row in audit_rows:
            if attention(name, row):
                assert any(shows(row, i) for i in incidents), f"{name}: unplanted finding {row}"


def test_demo_suggested_commands_answer_as_the_demo_said(demo_run):
    result, db, _ = demo_run
    commands = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("access-ledger --db")]
    assert len(commands) == 5
    check, explain, audit, reviews, leavers = (shlex.split(c)[1:] for c in commands)  # drop the program name
    denied = runner.invoke(app, check)
    assert denied.exit_code == 1, denied.output  # the unauthorised read was not allowed at that instant
    assert "no assignment" in denied.stdout
    explained = runner.invoke(app, explain)
    assert explained.exit_code == 0, explained.output
    assert "ml_engineer" in explained.stdout and "DATA-310" in explained.stdout
    audited = runner.invoke(app, audit)
    assert audited.exit_code == 0, audited.output
    assert "self-grant" in audited.stdout
    reviewed = runner.invoke(app, reviews)
    assert reviewed.exit_code == 0, reviewed.output
    assert "rubber-stamp" in reviewed.stdout and "revocation-not-carried-out" in reviewed.stdout
    assert leavers[-2:] == ["--hr", str(db.parent / TERMINATIONS)]
    left = runner.invoke(app, leavers)
    assert left.exit_code == 0, left.output
    assert "late-deactivation" in left.stdout and "user:mei" in left.stdout


def test_demo_campaigns_are_in_the_ledger_as_planned(demo_run):
    result, db, _ = demo_run
    listed = runner.invoke(app, ["--db", str(db), "review", "list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    summary = {
        r["campaign"]: (
            r["status"],
            r["tenants"],
            r["decided"] == r["items"],
            r["revoked"],
            r["exceptions"],
            r["revocations_open"],
        )
        for r in json.loads(listed.stdout)
    }
    # Q4's revocations were applied by the platform, all but the leaver's three (two roles, one team).
    assert summary == {
        "Q3-production": ("closed", "production", True, 0, 0, 0),
        "Q4-all-tenants": ("closed", "production,research,staging", True, 6, 0, 3),
    }
    status = runner.invoke(app, ["--db", str(db), "review", "status", "Q3-production", "--format", "json"])
    assert status.exit_code == 0, status.output
    per = {r["reviewer"]: (r["items"], r["kept"]) for r in json.loads(status.stdout)}
    assert per["user:farah"][0] >= 10 and per["user:farah"][0] == per["user:farah"][1]  # the rubber stamp


def test_demo_replaces_its_own_ledger_but_refuses_any_other(tmp_path):
    db = tmp_path / "mine.db"
    assert runner.invoke(app, ["--db", str(db), "init"]).exit_code == 0
    result = runner.invoke(app, ["--db", str(db), "demo", "--evidence", str(tmp_path / "ev")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: {db} already exists and is not a demo ledger: the demo builds a new one "
        "(give --db NEW.db, or --force to replace it)"
    )
    with AccessLedger.open(str(db)) as led:
        assert led.head() == 1
    assert not (tmp_path / "ev").exists()


def test_demo_without_the_leavers_audit_refuses_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "reports.leavers", None)  # as if reports/leavers.py were missing
    result = runner.invoke(app, ["--db", str(tmp_path / "d.db"), "demo", "--evidence", str(tmp_path / "ev")])
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: this build has no leavers audit (reports/leavers.py, `audit leavers`): the demo's "
        "planted late leaver could not be checked, so the demo does not run\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_an_evidence_folder_that_is_not_a_bundle(tmp_path):
    keep = tmp_path / "ev"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["--db", str(tmp_path / "d.db"), "demo", "--evidence", str(keep)])
    assert result.exit_code == 2
    assert "is not an evidence bundle" in result.stderr
    assert (keep / "notes.txt").read_text() == "mine"


def test_demo_runs_again_over_its_own_ledger(demo_run, tmp_path):
    _, db, _ = demo_run
    again = runner.invoke(
        app,
        ["demo", "--db", str(db), "--evidence", str(tmp_path / "ev"), "--end", (END + timedelta(days=1)).isoformat()],
    )
    assert again.exit_code == 0, again.output
    with AccessLedger.open(str(db)) as led:
        assert led.verify().ok
        first = next(led.read(1, 1))[1]
    assert first["type"] == "OrganizationCreated"


def test_demo_says_each_phase_as_it_ends_in_plain_text(demo_run):
    """#24: not one line and then silence for minutes: a line per phase, with its time; no terminal codes
    when the output is not a terminal."""
    result, _, _ = demo_run
    assert result.exit_code == 0, result.output
    phases = [re.match(r"  (\d/4 [a-z ]+): .* in [\d.]+ s$", line) for line in result.stdout.splitlines()]
    assert [m.group(1) for m in phases if m] == ["1/4 import", "2/4 evidence", "3/4 leavers", "4/4 point in time"]
    assert "\x1b[" not in result.stdout
