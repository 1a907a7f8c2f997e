"""Evidence is computed only from bytes verified in the same run (issue 25): the export's own warehouse.

- A cached warehouse edited and re-recorded by an attacker without the key (its proof passes, so the
  interactive audits read it) cannot change a bundle: the export never reads that file.
- A ledger file swapped back to the genuine one after the export's process opened a tampered one:
  the walk verifies the file at the path, and the bundle says only what the walk verified.
- One of the walk's files changed before it is loaded is refused; nothing is written.
- Oracle: on the demo generator's history, every audit file, chart and review record of a bundle is
  the one the interactive audits and the review records give on a fresh warehouse of the same ledger.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_trust import _history, _sql
from typer.testing import CliRunner

from access_ledger.cli import app
from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from reports import evidence
from reports.evidence import BundleError, export_bundle

runner = CliRunner()


def _secret_readers(bundle: Path) -> list[str]:
    with open(bundle / "audits" / "secrets.csv", newline="") as f:
        return sorted(row["who"] for row in csv.DictReader(f))


def _cached_warehouse(url: str, tmp_path: Path) -> Path:
    return Path(url + ".duckdb") if "://" not in url else tmp_path / "access-ledger-warehouse.duckdb"


def test_a_cached_warehouse_edited_and_rerecorded_cannot_change_the_bundle(ledger_url, tmp_path, monkeypatch):
    import duckdb

    monkeypatch.chdir(tmp_path)  # where a PostgreSQL ledger's cached warehouse lives
    _history(ledger_url)
    synced = runner.invoke(app, ["--db", ledger_url, "audit", "secrets", "--format", "json"])
    assert synced.exit_code == 0 and "user:alice" in synced.stdout, synced.output
    path = _cached_warehouse(ledger_url, tmp_path)
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM events WHERE type = 'ConnectorSecretAccessed'")
    con.execute("CHECKPOINT")
    con.close()
    _sql(ledger_url, "UPDATE al_warehouses SET sha256 = ?", (hashlib.sha256(path.read_bytes()).hexdigest(),))
    # The file's proof passes (no key): the interactive audit reads the edited file, as `verify` warns.
    interactive = runner.invoke(app, ["--db", ledger_url, "audit", "secrets", "--format", "json"])
    assert interactive.exit_code == 0 and "user:alice" not in interactive.stdout, interactive.output
    with AccessLedger.open(ledger_url) as led:
        export_bundle(led, tmp_path / "bundle")
    assert _secret_readers(tmp_path / "bundle") == ["user:alice"]


def test_a_ledger_swapped_back_under_the_export_cannot_reach_the_bundle(tmp_path, monkeypatch):
    genuine = tmp_path / "ledger.db"
    _history(str(genuine))
    with AccessLedger.open(str(genuine)) as led:  # the secret read is not the head (whose bytes are checked on open)
        led.create_user("dave", at="2026-01-06T00:00:00Z", actor="user:root")
    tampered, kept = tmp_path / "tampered.db", tmp_path / "kept.db"
    shutil.copy(genuine, tampered)
    shutil.copy(genuine, kept)
    _sql(
        str(tampered),
        "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), 'user:alice', 'user:carol') AS BLOB) "
        "WHERE CAST(state AS TEXT) LIKE '%ConnectorSecretAccessed%'",
    )
    os.replace(tampered, genuine)
    monkeypatch.setattr(evidence, "WORKER_FROM", 0)  # the walk in a worker process, which opens the path
    with AccessLedger.open(str(genuine)) as led:  # the export's process holds the tampered file
        os.replace(kept, genuine)  # and a watcher puts the genuine one back at the path
        result = export_bundle(led, tmp_path / "bundle")
    assert result.manifest["ledger"]["verify"]["ok"]
    assert _secret_readers(tmp_path / "bundle") == ["user:alice"]


def _edited(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"user:alice", b"user:carol"))


def _symlinked(path: Path) -> None:
    other = path.with_name("other.jsonl")
    other.write_bytes(path.read_bytes().replace(b"user:alice", b"user:carol"))
    path.unlink()
    path.symlink_to(other)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("tamper", "words"),
    [(_edited, "changed after the log walk"), (_symlinked, "cannot read"), (_fifo, "not the regular file")],
)
def test_a_walk_file_changed_before_it_is_loaded_is_refused_and_nothing_is_written(
    ledger_url, tmp_path, monkeypatch, tamper, words
):
    _history(ledger_url)
    walk = evidence._verify_and_write

    def then_tampered(url, path, first, last, led=None):
        done = walk(url, path, first, last, led)
        tamper(path)
        return done

    monkeypatch.setattr(evidence, "_verify_and_write", then_tampered)
    with AccessLedger.open(ledger_url) as led, pytest.raises(BundleError, match=words):
        export_bundle(led, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHAPE = dict(events=3_000, users=30, tenants=4, roles=10, assignments=150, days=90)
PERIOD = dict(start="2025-12-15T00:00:00Z", end="2026-02-15T00:00:00Z")


@pytest.mark.parametrize(
    "period, small", [({}, False), (PERIOD, False), ({}, True)], ids=["all", "period", "small-commits"]
)
def test_the_bundle_equals_the_interactive_audits_on_a_fresh_warehouse(
    ledger_url, tmp_path, monkeypatch, period, small
):
    """The oracle: the old way (every audit on a warehouse synced from the ledger, the review records read
    from the ledger) gives the same files, byte for byte, as the export's own warehouse (`small`: filled in
    many small blocks and transactions, each compressed by its own CHECKPOINT)."""
    from reports import warehouse
    from reports.audits import AUDITS, run_audit
    from reports.evidence import _charts, _write_audit, _write_events_parquet
    from reports.review_evidence import write_reviews
    from reports.warehouse import Warehouse

    monkeypatch.chdir(tmp_path)
    if small:
        monkeypatch.setattr(evidence, "FILL_BLOCK", 1 << 16)
        monkeypatch.setattr(warehouse, "FILL_COMMIT", 1_000)
    with AccessLedger.open(ledger_url, create=True) as led:
        led.import_lines(generate("large", END, **SHAPE).lines())
        result = export_bundle(led, tmp_path / "bundle", **period)
        new = tmp_path / "bundle"
        old = tmp_path / "old"
        for sub in ("audits", "charts"):
            (old / sub).mkdir(parents=True)
        start, end = result.manifest["period"]["from"], result.manifest["period"]["to"]
        first, last = result.manifest["period"]["first_position"], result.manifest["period"]["last_position"]
        with Warehouse.open(led, tmp_path / "fresh.duckdb") as wh:
            wh.sync()
            results = {name: run_audit(wh, name, at=end, start=start, end=end, sync=False) for name in AUDITS}
            for r in results.values():
                _write_audit(wh, r, old)
            _charts(wh, results["secrets"], start, end, first, last, old)
            (old / "events").mkdir()
            _write_events_parquet(wh, first, last, old / "events" / "events.parquet")
        reviews = write_reviews(led, old, first, last)
    assert reviews, "the history holds access review campaigns"
    compared = 0
    for path in sorted(
        p for p in old.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".jsonl", ".parquet")
    ):
        rel = path.relative_to(old)
        assert (new / rel).read_bytes() == path.read_bytes(), rel
        compared += 1
    assert compared >= 2 * len(AUDITS) + 3 + 2 * len(reviews)
