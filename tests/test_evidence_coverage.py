"""A bundle says how much of its period it covers (#24 item 6): a period that is not over covers up to the
newest event, one before the ledger begins holds no events; the export, the manifest, the report,
`evidence verify` and check_bundle.py all say so."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger

runner = CliRunner()


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ledger(url: str) -> tuple[str, str]:
    """A ledger begun two hours ago; (its first event's time, its newest's)."""
    now = datetime.now(UTC).replace(microsecond=0)
    with AccessLedger.open(url, create=True) as led:
        led.init(org="acme", at=_iso(now - timedelta(hours=2)))
        led.create_user("ana", at=_iso(now - timedelta(hours=1)))
        led.create_user("bo", at=_iso(now - timedelta(minutes=30)))
        return led.time_of(1), led.newest_at()


def _said_everywhere(url: str, bundle: Path, sentence: str, export_output: str) -> None:
    assert sentence in export_output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sentence in manifest["period"]["coverage"]
    assert sentence in (bundle / "report.html").read_text()
    verified = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert verified.exit_code == 0, verified.output
    assert sentence in verified.stdout
    checked = subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
    assert sentence in checked.stdout


def test_a_period_not_over_covers_up_to_the_newest_event(ledger_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, newest = _ledger(ledger_url)
    year, month = int(newest[:4]), int(newest[5:7])
    bundle = tmp_path / "current"
    result = runner.invoke(
        app,
        ["--db", ledger_url, "evidence", "export", "--period", f"{year}-Q{(month - 1) // 3 + 1}", "--out", str(bundle)],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["period"]["complete"] is False and manifest["period"]["covers_to"] == newest
    _said_everywhere(ledger_url, bundle, f"covers up to {newest}", result.stdout)


def test_a_period_before_the_ledger_says_it_holds_no_events(ledger_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, newest = _ledger(ledger_url)
    bundle = tmp_path / "before"
    result = runner.invoke(
        app, ["--db", ledger_url, "evidence", "export", "--period", str(int(first[:4]) - 1), "--out", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((bundle / "manifest.json").read_text())["period"]["events"] == 0
    _said_everywhere(ledger_url, bundle, f"the ledger begins {first}: this period holds no events", result.stdout)


def test_a_period_that_is_over_is_complete_and_an_edited_coverage_claim_fails(ledger_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, newest = _ledger(ledger_url)
    bundle = tmp_path / "over"
    result = runner.invoke(
        app,
        [
            "--db",
            ledger_url,
            "evidence",
            "export",
            "--from",
            first,
            "--to",
            _iso(datetime.fromisoformat(newest.replace("Z", "+00:00")) - timedelta(minutes=1)),
            "--out",
            str(bundle),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["period"]["complete"] is True and manifest["period"]["coverage"] is None
    assert "covers up to" not in result.stdout
    # A coverage claim the chained events contradict is caught by both checkers.
    current = tmp_path / "current"
    assert runner.invoke(app, ["--db", ledger_url, "evidence", "export", "--out", str(current)]).exit_code == 0
    manifest = json.loads((current / "manifest.json").read_text())
    manifest["period"]["covers_to"] = manifest["period"]["to"]
    (current / "manifest.json").write_text(json.dumps(manifest))
    verified = runner.invoke(app, ["evidence", "verify", str(current)])
    assert verified.exit_code == 1 and "but its last event is at" in verified.stdout
    checked = subprocess.run(
        [sys.executable, "-I", str(current / "check_bundle.py"), str(current)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 1 and "but its last event is at" in checked.stderr


def test_a_coverage_line_from_an_edited_manifest_is_printed_as_data(ledger_url, tmp_path, monkeypatch):
    """The manifest is untrusted input: terminal control sequences in it are escaped, never sent."""
    monkeypatch.chdir(tmp_path)
    _ledger(ledger_url)
    bundle = tmp_path / "b"
    assert runner.invoke(app, ["--db", ledger_url, "evidence", "export", "--out", str(bundle)]).exit_code == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["period"]["coverage"] = "covers up to \x1b[2J\x1b]0;owned\x07 now"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    verified = runner.invoke(app, ["evidence", "verify", str(bundle)])
    checked = subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for out in (verified.stdout, checked.stdout):
        assert "\x1b" not in out and "\x07" not in out
        assert "coverage: covers up to \\x1b[2J\\x1b]0;owned\\x07 now" in out
