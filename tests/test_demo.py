"""The demo: the first thing a new user runs."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from ledger.app import AccessLedger
from ledger.cli import app

runner = CliRunner()


def test_demo_builds_a_verified_year_and_its_suggestions_work(tmp_path):
    db = str(tmp_path / "demo.db")
    result = runner.invoke(app, ["--db", db, "demo"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "verify: intact" in out
    assert "NO: no assignment of this principal (directly or through a team) allows it" in out
    for kind in ("expired-grant-not-revoked", "sod-conflict", "self-grant", "change-without-reason",
                 "unauthorised-secret-read", "dormant-admin"):
        assert kind in out
    led = AccessLedger.open(db)
    assert led.head() > 2000 and led.verify().ok
    led.close()
    # the suggested next command answers as the demo said: ivan was not allowed
    at = re.search(r"--tenant production --at (\S+)", out).group(1)
    check = runner.invoke(app, ["--db", db, "check", "user:ivan", "read_secret_value",
                                "service_connector/aws-prod", "--tenant", "production", "--at", at])
    assert check.exit_code == 1
    explain = runner.invoke(app, ["--db", db, "explain", "user:hana", "promote", "model_version/fraud-v3",
                                  "--tenant", "production"])
    assert explain.exit_code == 0
    assert "hana holds role ml_engineer in tenant production" in " ".join(explain.stdout.split())


def test_demo_refuses_to_replace_an_existing_ledger(tmp_path):
    db = tmp_path / "mine.db"
    assert runner.invoke(app, ["--db", str(db), "init"]).exit_code == 0
    result = runner.invoke(app, ["--db", str(db), "demo"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: {db} already exists: the demo builds a new ledger (give --db NEW.db, "
                                     "or --force to replace it)")
    assert AccessLedger.open(str(db)).head() == 1
