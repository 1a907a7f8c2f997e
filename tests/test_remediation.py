"""Remediation in a review record is the removal of exactly that item's grant (#25): a record naming another
principal's removal fails in both checkers, and `audit reviews` credits a revocation only with a removal of it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_evidence_reviews import _rehash, close, decide, export, positions, record, start
from test_reviews import build
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger

runner = CliRunner()
CAROL = 5  # carol's viewer in prod, among Q4's items


def _carol(rec: dict) -> dict:
    (item,) = [i for i in rec["items"] if (i["principal"], i["role"], i["tenant"]) == ("user:carol", "viewer", "prod")]
    return item


@pytest.fixture
def not_carried_out(ledger_url):
    """Q4 revokes carol's viewer in prod, closed without auto-revoke; only the service account ci's viewer in
    prod is removed afterwards (same role, tenant and type of event: another principal's grant)."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q4", "2026-03-01T00:00:00Z", "user:erin", [], "2026-03-15T00:00:00Z")
        decide(led, "Q4", CAROL, "revoke", "2026-03-02T00:00:00Z", "no longer needed")
        close(led, "Q4", "2026-03-03T00:00:00Z", "keep", False)
        led.unassign_role("viewer", "service_account:ci", tenant="prod", at="2026-03-04T00:00:00Z")
    return ledger_url


def _both_checkers(bundle) -> tuple[list[str], subprocess.CompletedProcess]:
    result = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert result.exit_code == 1, result.output
    problems = [line.removeprefix("problem: ") for line in result.stdout.splitlines() if line.startswith("problem:")]
    done = subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return problems, done


def test_a_record_naming_another_principals_removal_fails_in_both_checkers(not_carried_out, tmp_path):
    bundle = export(not_carried_out, tmp_path / "b")
    rec = record(bundle, "Q4")
    item = _carol(rec)
    assert (item["item"], item["outcome"], item["remediation"]) == (CAROL, "revoke", None)
    ((pos, ev),) = positions(not_carried_out)["RoleUnassigned"]
    assert ev["principal"] == "service_account:ci"
    item["remediation"] = {"position": pos, "type": ev["type"], "at": ev["at"], "reason": None}
    item["exception"] = None
    rec["exceptions"] = []
    (bundle / "reviews" / "Q4.json").write_text(json.dumps(rec))
    _rehash(bundle, "reviews/Q4.json")
    problems, done = _both_checkers(bundle)
    assert problems == [
        f"reviews/Q4.json: item {CAROL}'s remediation names position {pos}, a RoleUnassigned of another grant than "
        "the item's (not its role, principal, tenant, resource or team)"
    ]
    assert done.returncode == 1 and done.stderr.splitlines()[0] == problems[0]


def test_a_record_whose_item_is_rewritten_to_match_the_removal_fails_in_both_checkers(not_carried_out, tmp_path):
    """Rewriting the item itself to be ci's is caught too: the item is not its line of the hashed population."""
    bundle = export(not_carried_out, tmp_path / "b")
    rec = record(bundle, "Q4")
    ((pos, ev),) = positions(not_carried_out)["RoleUnassigned"]
    item = _carol(rec)
    item["principal"] = "service_account:ci"
    item["remediation"] = {"position": pos, "type": ev["type"], "at": ev["at"], "reason": None}
    (bundle / "reviews" / "Q4.json").write_text(json.dumps(rec))
    _rehash(bundle, "reviews/Q4.json")
    problems, done = _both_checkers(bundle)
    assert problems == [
        f"reviews/Q4.json: item {CAROL}'s principal, role, tenant, resource or team is not its line of the population "
        "file"
    ]
    assert done.returncode == 1 and done.stderr.splitlines()[0] == problems[0]


def _revocations_not_carried_out(url: str) -> list[dict]:
    result = runner.invoke(app, ["--db", url, "audit", "reviews", "--format", "json", "--to", "2026-04-01"])
    assert result.exit_code == 0, result.output
    return [r for r in json.loads(result.stdout) if r["finding"] == "revocation-not-carried-out"]


def test_audit_reviews_does_not_credit_another_principals_removal(not_carried_out):
    (row,) = _revocations_not_carried_out(not_carried_out)
    assert row["who"] == "user:carol" and "never removed" in row["detail"]


def test_audit_reviews_credits_only_a_removal_of_the_items_grant(not_carried_out, monkeypatch):
    """Should the derivation of the carrying removal ever name another grant's removal, the audit's query,
    which checks the event at that position against the item, still does not credit it."""
    import projections.reviews as reviews

    ((pos, ev),) = positions(not_carried_out)["RoleUnassigned"]
    monkeypatch.setattr(reviews, "carrying_removal", lambda *args: (pos, ev["at"]))
    (row,) = _revocations_not_carried_out(not_carried_out)
    assert row["who"] == "user:carol" and "never removed" in row["detail"]
