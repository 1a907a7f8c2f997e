"""`evidence verify --recompute` (#25): a bundle's audits, charts, review records, report and counts made again
from its own verified events; and, without it, both checkers saying what only a signature vouches for."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_evidence_reviews import close, decide, export, start
from test_reviews import build
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from reports.evidence import verify_bundle

runner = CliRunner()


def history(url: str) -> str:
    """A year's start with one review campaign (revoked by its close) and a secret read: every kind of file."""
    build(url)
    with AccessLedger.open(url) as led:
        start(led, "Q3", "2026-02-01T00:00:00Z", "user:carol", ["team:research=user:dana"], None)
        decide(led, "Q3", 1, "revoke", "2026-02-02T10:00:00Z")
        close(led, "Q3", "2026-02-05T12:00:00Z", "exception", True)
        led.register_connector("aws-prod", "prod", at="2026-02-06T00:00:00Z")
        led.record_connector_access("aws-prod", "prod", "user:bob", "allowed", at="2026-02-07T00:00:00Z")
    return url


def rehash(bundle: Path, rel: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / rel).read_bytes()
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def verify(bundle: Path, *options: str):
    return runner.invoke(app, ["evidence", "verify", str(bundle), *options])


def standalone(bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_untouched_bundle_passes_recompute(ledger_url, tmp_path):
    bundle = export(history(ledger_url), tmp_path / "b", end="2026-03-01T00:00:00Z")
    result = verify(bundle, "--recompute")
    assert result.exit_code == 0, result.output
    listed = set(json.loads((bundle / "manifest.json").read_text())["files"])
    made = listed - {"events/events.jsonl", "events/chain.jsonl", "digest.json", "check_bundle.py"}
    assert {"report.html", "audits/secrets.csv", "reviews/Q3.json", "charts/secrets.csv"} <= made
    (line,) = [n for n in result.stdout.splitlines() if n.startswith("note: recomputed from")]
    assert line.startswith(f"note: recomputed from the bundle's 26 events: {len(made)} files and every count")


def test_a_consistently_rewritten_unsigned_bundle_passes_plain_verify_but_fails_recompute(ledger_url, tmp_path):
    """The secret read is removed from the secrets audit's CSV and JSON, its count from the manifest, and the
    files re-hashed: both checkers pass it (saying only the exporter's hashes vouch for audits/*), --recompute
    names every file and count rewritten."""
    bundle = export(history(ledger_url), tmp_path / "b", end="2026-03-01T00:00:00Z")
    path = bundle / "audits" / "secrets.csv"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 2 and "user:bob" in lines[1]
    path.write_text(lines[0])
    summary = json.loads((bundle / "audits" / "secrets.json").read_text())
    summary["rows"], summary["findings"] = 0, []
    (bundle / "audits" / "secrets.json").write_text(json.dumps(summary))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["audits"]["secrets"]["rows"] = 0
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for rel in ("audits/secrets.csv", "audits/secrets.json"):
        rehash(bundle, rel)
    plain = verify(bundle)
    assert plain.exit_code == 0, plain.output
    assert "note: audits/* (CSV, Parquet, JSON), charts/*.csv, events/events.parquet, report.html, the counts " in (
        plain.stdout
    )
    assert "vouched for by nothing but the SHA-256 the exporter wrote into manifest.json" in plain.stdout
    done = standalone(bundle)
    assert done.returncode == 0, done.stderr
    assert "to check them against the events: access-ledger evidence verify --recompute (this checker cannot)" in (
        done.stdout
    )
    result = verify(bundle, "--recompute")
    assert result.exit_code == 1, result.output
    assert [n for n in result.stdout.splitlines() if n.startswith("problem:")] == [
        "problem: manifest.json: audits.secrets.rows differs from the audit recomputed from the bundle's events",
        "problem: audits/secrets.csv: differs from the one recomputed from the bundle's events",
        "problem: audits/secrets.json: differs from the one recomputed from the bundle's events",
    ]


def test_a_bundle_from_a_later_position_is_refused_with_one_line(ledger_url, tmp_path):
    bundle = export(history(ledger_url), tmp_path / "b", start="2026-02-01T00:00:00Z", end="2026-03-01T00:00:00Z")
    result = verify(bundle, "--recompute")
    assert result.exit_code == 1
    (problem,) = [n for n in result.stdout.splitlines() if n.startswith("problem:")]
    assert problem.startswith("problem: cannot recompute: the bundle's events start at position ")


def test_sql_recorded_otherwise_than_this_version_runs_fails(ledger_url, tmp_path):
    """SQL rewritten in the manifest (with outputs to match) is never run: it must be this version's."""
    bundle = export(history(ledger_url), tmp_path / "b", end="2026-03-01T00:00:00Z")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["audits"]["secrets"]["sql"]["secrets.sql"] += "\n-- and nothing else"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = verify(bundle, "--recompute")
    assert result.exit_code == 1
    assert "problem: manifest.json: the SQL of audit secrets (secrets.sql) is not access-ledger " in result.stdout


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recompute")
    return export(history(str(folder / "ledger.db")), folder / "b", end="2026-03-01T00:00:00Z")


EDITS = st.sampled_from(["drop", "duplicate", "cell", "swap"])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(audit=st.sampled_from(["review", "changes", "hygiene", "secrets"]), edit=EDITS, data=st.data())
def test_random_edits_to_an_audit_files_rows_are_caught_by_recompute(small_bundle, tmp_path_factory, audit, edit, data):
    bundle = tmp_path_factory.mktemp("edited") / "b"
    shutil.copytree(small_bundle, bundle)
    path = bundle / "audits" / f"{audit}.csv"
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    header, body = rows[0], rows[1:]
    assert body, audit
    i = data.draw(st.integers(0, len(body) - 1))
    if edit == "drop":
        del body[i]
    elif edit == "duplicate":
        body.insert(i, body[i])
    elif edit == "cell":
        j = data.draw(st.integers(0, len(header) - 1))
        body[i][j] = data.draw(st.text(max_size=20).filter(lambda v: v != body[i][j]))
    else:
        k = data.draw(st.integers(0, len(body) - 1).filter(lambda k: body[k] != body[i]))
        body[i], body[k] = body[k], body[i]
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows([header, *body])
    path.write_text(out.getvalue(), newline="")
    if edit in ("drop", "duplicate"):  # the manifest's count follows, as an exporter rewriting it would do
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["audits"][audit]["rows"] = len(body)
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    rehash(bundle, f"audits/{audit}.csv")
    assert verify_bundle(bundle).ok
    check = verify_bundle(bundle, recompute=True)
    assert not check.ok
    assert f"audits/{audit}.csv: differs from the one recomputed from the bundle's events" in check.problems


def test_a_manifest_whose_claims_are_of_other_shapes_fails_in_one_line(small_bundle, tmp_path):
    """The claims the report is rendered with come from the manifest: of another shape, one problem, no traceback."""
    bundle = tmp_path / "b"
    shutil.copytree(small_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["ledger"]["digest"], manifest["generated_at"] = 5, {"at": []}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = verify(bundle, "--recompute")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [n for n in result.stdout.splitlines() if n.startswith("problem:")] == [
        "problem: manifest.json: its period, ledger or generation time is not what the export writes"
    ]


def test_events_parquet_bytes_depend_on_the_rows_alone(tmp_path: Path) -> None:
    """The same events stored another way (the exporter's walk and --recompute fill their warehouses each their
    own way) give the same events.parquet bytes: its row groups are not cut where the storage was cut."""
    import duckdb

    from reports.evidence import _write_events_parquet
    from reports.warehouse import Warehouse

    n = 206_128  # a table grown by copies of itself holds partly filled storage row groups
    grown = duckdb.connect()
    grown.execute(
        f"CREATE TABLE events AS SELECT i AS position, 'user:' || (i % 97) AS actor FROM range(1, {n + 1}) t(i)"
    )
    for _ in range(3):
        grown.execute(
            f"INSERT INTO events SELECT position + (SELECT max(position) FROM events), actor FROM events "
            f"WHERE position <= {n}"
        )
    whole = duckdb.connect()
    whole.execute("CREATE TABLE events (position BIGINT, actor VARCHAR)")
    whole.register("rows", grown.sql("SELECT * FROM events").to_arrow_table())
    whole.execute("INSERT INTO events SELECT * FROM rows ORDER BY position")
    digests = []
    for name, con in (("grown", grown), ("whole", whole)):
        target = tmp_path / f"{name}.parquet"
        _write_events_parquet(Warehouse(None, con, ":memory:"), 1, 4 * n, target)  # type: ignore[arg-type]
        digests.append(hashlib.sha256(target.read_bytes()).hexdigest())
        con.close()
    assert digests[0] == digests[1]


def test_events_parquet_of_rows_stored_out_of_order_is_in_position_order(tmp_path: Path) -> None:
    """The plain scan that writes events.parquet relies on the table keeping position order; a table whose rows
    were inserted in another order still gives the file (the same bytes) that the ordered table gives."""
    import duckdb

    from reports.evidence import _write_events_parquet
    from reports.warehouse import Warehouse

    n = 300_000
    digests = []
    for name, order in (("ordered", "i"), ("shuffled", "hash(i)")):
        con = duckdb.connect()
        con.execute(
            f"CREATE TABLE events AS SELECT i AS position, 'user:' || (i % 89) AS actor FROM range(1, {n + 1}) t(i) "
            f"ORDER BY {order}"
        )
        target = tmp_path / f"{name}.parquet"
        _write_events_parquet(Warehouse(None, con, ":memory:"), 1, n, target)  # type: ignore[arg-type]
        rows = con.execute(f"SELECT position FROM read_parquet('{target}')").fetchall()
        assert [r[0] for r in rows] == list(range(1, n + 1))
        digests.append(hashlib.sha256(target.read_bytes()).hexdigest())
        con.close()
    assert digests[0] == digests[1]
