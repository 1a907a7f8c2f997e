"""Evidence bundles: what goes in, and `evidence verify` catching a changed, missing or added file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger.cli import app
from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from reports.evidence import _Lines, needs_attention

runner = CliRunner()
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHAPE = dict(events=6_000, users=40, tenants=5, roles=12, assignments=250, days=120)
AUDITS = ("review", "least-privilege", "secrets", "sod", "changes", "hygiene", "reviews", "authority")


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("evidence") / "ledger.db"
    with AccessLedger.open(str(db), create=True) as led:
        led.import_lines(generate("large", END, **SHAPE).lines())
    return db


@pytest.fixture(scope="module")
def bundle(ledger_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "q1"
    result = runner.invoke(
        app,
        [
            "--db",
            str(ledger_db),
            "evidence",
            "export",
            "--from",
            "2025-12-01T00:00:00Z",
            "--to",
            "2026-03-01T00:00:00Z",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"check it later with: access-ledger evidence verify {out}" in result.stdout
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_bundle_holds_events_audits_report_and_a_manifest_of_hashes(bundle, ledger_db):
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    assert {"report.html", "digest.json", "events/events.jsonl", "events/events.parquet"} <= files
    for name in AUDITS:
        assert {f"audits/{name}.csv", f"audits/{name}.parquet", f"audits/{name}.json"} <= files
        meta = manifest["audits"][name]
        assert meta["sql"] and all("SELECT" in text.upper() for text in meta["sql"].values())
        assert meta["rows"] == pq.read_metadata(bundle / "audits" / f"{name}.parquet").num_rows
    for name, entry in manifest["files"].items():
        data = (bundle / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["period"]["from"] == "2025-12-01T00:00:00Z" and manifest["period"]["to"] == "2026-03-01T00:00:00Z"
    assert manifest["tool"]["name"] == "access-ledger" and manifest["tool"]["version"]
    assert manifest["command"] == (
        f"access-ledger --db {ledger_db} evidence export --from 2025-12-01T00:00:00Z "
        f"--to 2026-03-01T00:00:00Z --out {bundle}"
    )
    assert manifest["generated_at"].endswith("Z")
    with AccessLedger.open(str(ledger_db)) as led:
        assert manifest["ledger"]["verify"]["ok"] is True
        assert manifest["ledger"]["digest"]["link"] == led.digest()["link"]
        assert json.loads((bundle / "digest.json").read_text())["position"] == led.head()
        first, last = led.positions_between("2025-12-01T00:00:00Z", "2026-03-01T00:00:00Z")
        expected = b"".join(led.export_lines("2025-12-01T00:00:00Z", "2026-03-01T00:00:00Z"))
    assert (bundle / "events" / "events.jsonl").read_bytes() == expected
    assert manifest["period"]["events"] == last - first + 1 == expected.count(b"\n")


def test_each_audit_is_every_row_as_csv_and_parquet_and_its_findings_as_json(bundle):
    import csv

    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in AUDITS:
        meta = manifest["audits"][name]
        rows = pq.read_table(bundle / "audits" / f"{name}.parquet").to_pylist()
        with open(bundle / "audits" / f"{name}.csv", newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
        assert table[0] == meta["columns"] and len(table) - 1 == len(rows) == meta["rows"], name
        assert [r[table[0].index("who")] for r in table[1:]] == [r["who"] or "" for r in rows], name
        summary = json.loads((bundle / "audits" / f"{name}.json").read_text())
        attention = [r for r in rows if needs_attention(name, r)]
        assert {k: summary[k] for k in ("audit", "rows", "needs_attention", "columns")} == {
            "audit": name,
            "rows": len(rows),
            "needs_attention": len(attention),
            "columns": meta["columns"],
        }
        assert meta["needs_attention"] == len(attention) == len(summary["findings"]), name
        # The findings needing attention, in audit order; never the review material around them.
        assert [(r["who"], r.get("finding")) for r in summary["findings"]] == [
            (r["who"], r.get("finding")) for r in attention
        ], name
        assert len(summary["findings"]) < len(rows) or len(attention) == len(rows), name
    assert sum(manifest["audits"][n]["needs_attention"] for n in AUDITS) > 0
    assert (
        len(json.loads((bundle / "audits" / "secrets.json").read_text())["findings"])
        < manifest["audits"]["secrets"]["rows"]
    )


def _parquet_in_file_order(path: Path) -> list[tuple]:
    import duckdb

    return duckdb.sql(
        f"SELECT position, type, actor FROM read_parquet('{path}', file_row_number = true) ORDER BY file_row_number"
    ).fetchall()


def test_parquet_events_match_the_jsonl(bundle):
    rows = _parquet_in_file_order(bundle / "events" / "events.parquet")
    lines = [json.loads(x) for x in (bundle / "events" / "events.jsonl").read_text().splitlines()]
    assert [(r[1], r[2]) for r in rows] == [(e["type"], e["actor"]) for e in lines]
    assert [r[0] for r in rows] == list(range(rows[0][0], rows[0][0] + len(rows)))


def test_parquet_is_in_position_order_even_from_a_warehouse_stored_out_of_order(ledger_db, tmp_path):
    """A warehouse filled out of order (as earlier versions could) still gives a file in position order."""
    from reports.evidence import export_bundle
    from reports.warehouse import Warehouse

    db = tmp_path / "copy.db"
    shutil.copy(ledger_db, db)
    with AccessLedger.open(str(db)) as led:
        with Warehouse.open(led) as wh:
            wh.sync()
            wh.con.execute("CREATE TEMP TABLE shuffled AS SELECT * FROM events ORDER BY hash(position)")
            wh.con.execute("DELETE FROM events")
            wh.con.execute("INSERT INTO events SELECT * FROM shuffled")
            stored = [r[0] for r in wh.con.execute("SELECT position FROM events LIMIT 50").fetchall()]
            assert stored != sorted(stored)  # the table is out of order now
            result = export_bundle(led, tmp_path / "b", start="2025-12-01T00:00:00Z", end="2026-03-01T00:00:00Z")
            first, last = led.positions_between("2025-12-01T00:00:00Z", "2026-03-01T00:00:00Z")
    rows = _parquet_in_file_order(tmp_path / "b" / "events" / "events.parquet")
    assert [r[0] for r in rows] == list(range(first, last + 1))
    assert (
        result.manifest["files"]["events/events.parquet"]["bytes"]
        == (tmp_path / "b" / "events" / "events.parquet").stat().st_size
    )


def test_verify_accepts_an_untouched_bundle(bundle):
    result = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: {len(json.loads((bundle / 'manifest.json').read_text())['files'])} files")


def test_verify_names_a_file_with_one_byte_changed(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    target = copy / "audits" / "sod.csv"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = runner.invoke(app, ["evidence", "verify", str(copy)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["changed: audits/sod.csv"]
    assert result.stderr.strip() == f"FAILED: 1 difference(s) from the manifest of {copy}"


def test_verify_names_a_deleted_file(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    (copy / "events" / "events.parquet").unlink()
    result = runner.invoke(app, ["evidence", "verify", str(copy)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["missing: events/events.parquet"]


def test_verify_names_an_added_file(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    (copy / "audits" / "extra.csv").write_text("who\nuser:mallory\n")
    result = runner.invoke(app, ["evidence", "verify", str(copy)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["added: audits/extra.csv"]


def test_zip_bundle_verifies_and_catches_a_changed_member(ledger_db, tmp_path):
    result = runner.invoke(app, ["--db", str(ledger_db), "evidence", "export", "--out", str(tmp_path / "all"), "--zip"])
    assert result.exit_code == 0, result.output
    archive = tmp_path / "all.zip"
    assert runner.invoke(app, ["evidence", "verify", str(archive)]).exit_code == 0
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data.replace(b"user:", b"user;", 1) if info.filename == "report.html" else data)
    result = runner.invoke(app, ["evidence", "verify", str(tampered)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["changed: report.html"]


def test_signed_manifest_catches_an_edit_of_the_manifest_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCESS_LEDGER_SEAL_KEY", "auditor-secret")
    sealed = tmp_path / "sealed.db"  # sealed under the key: a ledger that passes verify with it
    with AccessLedger.open(str(sealed), create=True) as led:
        led.import_lines(generate("large", END, **SHAPE).lines())
    out = tmp_path / "signed"
    result = runner.invoke(app, ["--db", str(sealed), "evidence", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signature"]["algorithm"] == "HMAC-SHA256"
    manifest["period"]["from"] = "2026-02-01T00:00:00Z"  # an edit that keeps every file hash right
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["evidence", "verify", str(out)])
    assert result.exit_code == 1
    assert "changed: manifest.json" in result.stdout.splitlines()


def test_export_refuses_a_folder_that_is_not_empty_and_a_bad_period(ledger_db, bundle):
    result = runner.invoke(app, ["--db", str(ledger_db), "evidence", "export", "--out", str(bundle)])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {bundle} is not empty: an evidence bundle goes into a new folder\n"
    result = runner.invoke(
        app,
        [
            "--db",
            str(ledger_db),
            "evidence",
            "export",
            "--out",
            str(bundle.parent / "x"),
            "--from",
            "2026-03-01T00:00:00Z",
            "--to",
            "2026-01-01T00:00:00Z",
        ],
    )
    assert result.exit_code == 2
    assert result.stderr == "Error: from: 2026-03-01T00:00:00Z is after to: 2026-01-01T00:00:00Z\n"


def test_verify_refuses_what_is_not_a_bundle(tmp_path):
    result = runner.invoke(app, ["evidence", "verify", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path} has no manifest.json: it is not an evidence bundle\n"


def test_report_is_self_contained_and_explains_each_section(bundle):
    html = (bundle / "report.html").read_text()
    for marker in ("<script src", "<link ", "http://", "https://", "@import", "url("):
        assert marker not in html
    for section in (
        "Summary",
        "Who could read cloud credentials, per tenant",
        "Grants and revocations per week",
        "Connector-secret accesses per day",
        "Checking this bundle",
        "access-ledger evidence verify",
    ):
        assert section in html
    assert html.count("<svg") == 3


@given(st.integers(2, 60), st.data())
@settings(max_examples=200, deadline=None)
def test_jsonl_written_from_the_walks_batches_is_the_periods_lines(n, data):
    """However the walk batches the log, the file holds positions first..last once each, in order."""
    import hashlib
    import io

    first = data.draw(st.integers(1, n + 1), label="first")
    last = data.draw(st.integers(first - 1, n), label="last")
    cuts = sorted(data.draw(st.sets(st.integers(2, n), max_size=8), label="cuts") | {1, n + 1})
    stop = data.draw(st.integers(1, n + 1), label="walk stops before")  # a mismatch ends the walk there
    rows = [(p, "oid", 1, "topic", f'{{"p": {p}}}'.encode(), "link") for p in range(1, n + 1)]
    f = io.BytesIO()
    lines = _Lines(f, first, last)
    for a, b in pairwise(cuts):
        if b > stop:
            break
        lines.take(rows[a - 1 : b - 1])
    if lines.next <= last:
        lines.copy_rest(_Stored(rows))
    expected = b"".join(r[4] + b"\n" for r in rows[first - 1 : last])
    assert f.getvalue() == expected
    assert (lines.sha.hexdigest(), lines.size) == (hashlib.sha256(expected).hexdigest(), len(expected))


class _Stored:
    def __init__(self, rows: list[tuple]):
        self.rows = rows

    def read_bytes(self, start: int, stop: int):
        return ((r[0], r[4]) for r in self.rows[start - 1 : stop])


@pytest.mark.parametrize("in_worker", [False, True], ids=["in-process", "worker-process"])
def test_export_of_a_tampered_ledger_says_so_and_still_holds_every_event_of_the_period(
    ledger_db, tmp_path, monkeypatch, in_worker
):
    import sqlite3

    from reports import evidence

    db = tmp_path / "tampered.db"
    shutil.copy(ledger_db, db)
    with AccessLedger.open(str(db)) as led:
        first, last = led.positions_between("2025-12-01T00:00:00Z", "2026-03-01T00:00:00Z")
        expected_lines = b"".join(led.export_lines("2025-12-01T00:00:00Z", "2026-03-01T00:00:00Z"))
    bad = (first + last) // 2
    con = sqlite3.connect(db, isolation_level=None)
    before = con.execute("SELECT state FROM stored_events WHERE rowid = ?", (bad,)).fetchone()[0]
    con.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (before.replace(b'"at"', b'"at" '), bad))
    con.close()
    monkeypatch.setattr(evidence, "WORKER_FROM", 0 if in_worker else 10**9)
    out = tmp_path / "bundle"
    command = [
        "--db",
        str(db),
        "evidence",
        "export",
        "--from",
        "2025-12-01T00:00:00Z",
        "--to",
        "2026-03-01T00:00:00Z",
        "--out",
        str(out),
    ]
    refused = runner.invoke(app, command)  # refused, nothing left behind
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: the ledger fails verify at position {bad}: position {bad} does not match its "
        "hash chain link (changed, inserted or reordered event); no bundle written "
        "(--allow-tampered exports it anyway, marked as such)\n"
    )
    assert not out.exists() or not any(out.iterdir())
    result = runner.invoke(app, [*command, "--allow-tampered"])
    assert result.exit_code == 0, result.output
    first_line = (out / "manifest.json").read_text().splitlines()[0]
    assert first_line.startswith('{"warning": "TAMPERED LEDGER: verify failed at export (position ')
    html = (out / "report.html").read_text()
    assert html.index('<div class="banner bad" id="tampered"><strong>TAMPERED LEDGER.') < html.index("<header>")
    assert html.index('class="banner') > html.index('id="tampered"') - 30  # the page's first banner
    manifest = json.loads((out / "manifest.json").read_text())
    verified = manifest["ledger"]["verify"]
    assert verified["ok"] is False and verified["first_bad_position"] == bad
    lines = (out / "events" / "events.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == last - first + 1
    assert lines[bad - first] == before.replace(b'"at"', b'"at" ') + b"\n"
    assert b"".join(lines[: bad - first]) == b"".join(expected_lines.splitlines(keepends=True)[: bad - first])
    assert runner.invoke(app, ["evidence", "verify", str(out)]).exit_code == 0


@given(
    st.sampled_from(AUDITS),
    st.lists(
        st.sampled_from(["self-grant", "unauthorised-access", "authorised", "dormant-principal", "gained", None]),
        max_size=40,
    ),
    st.integers(0, 8),
    st.integers(0, 8),
)
@settings(max_examples=150, deadline=None)
def test_split_rows_takes_the_first_rows_needing_attention_and_the_first_others(audit, findings, cap_a, cap_o):
    import pyarrow as pa

    from reports.audits import AuditResult
    from reports.evidence import ATTENTION, split_rows

    table = pa.table({"finding": pa.array(findings, pa.string()), "n": list(range(len(findings)))})
    result = AuditResult(
        name=audit, title="t", description="d", columns=["finding", "n"], sql={}, params={}, table=table
    )
    kinds = ATTENTION[audit]
    rows = table.to_pylist()
    needs = [r for r in rows if kinds is None or r["finding"] in (kinds or ())]
    others = [] if kinds is None else [r for r in rows if r not in needs]
    assert split_rows(result, cap_a, cap_o) == (needs[:cap_a], others[:cap_o])


def test_the_benchmarks_parts_are_the_exports_work(ledger_db, tmp_path):
    """`evidence_bench.py --parts` times the export's own steps: the files they write are the bundle's."""
    db = tmp_path / "ledger.db"
    shutil.copy(ledger_db, db)
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "evidence_bench.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--db", str(db), "--measure-parts", str(tmp_path / "parts")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    timed = [line.split(" wall ")[0].strip() for line in done.stdout.splitlines() if line.startswith("    ")]
    assert timed == [
        "log walk: verify + events.jsonl",
        "own warehouse, from the walk's lines",
        "events.parquet",
        *[f"audit {a}: {step}" for a in AUDITS for step in ("query", "csv + parquet + json")],
        "charts",
        "hashing (all but the jsonl)",
    ]
    assert "the export takes at least" in done.stdout.splitlines()[-1]
    result = runner.invoke(app, ["--db", str(db), "evidence", "export", "--out", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    for rel in ("events/events.jsonl", "audits/secrets.csv", "audits/sod.parquet", "charts/grants.csv"):
        assert (tmp_path / "parts" / rel).read_bytes() == (tmp_path / "all" / rel).read_bytes(), rel
    # The summaries differ only in the moment each run took as the end of the period.
    parts, whole = (json.loads((tmp_path / run / "audits" / "sod.json").read_text()) for run in ("parts", "all"))
    assert parts["findings"] == whole["findings"] and parts["rows"] == whole["rows"]


def test_the_bundle_lists_token_findings_and_holds_the_token_events(ledger_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a PostgreSQL ledger's export keeps its warehouse in the working folder
    with AccessLedger.open(ledger_url, create=True) as led:
        led.init(org="acme", at="2026-01-01T00:00:00Z")
        led.create_service_account("ci", at="2026-01-02T00:00:00Z")
        led.append(
            {
                "type": "TokenIssued",
                "at": "2026-01-03T00:00:00Z",
                "actor": "system",
                "token_id": "tok-ci",
                "principal": "service_account:ci",
                "scopes": ["report", "admin"],
                "secret_sha256": "1" * 64,
            }
        )
        led.deactivate_service_account("ci", at="2026-01-04T00:00:00Z", reason="retired")
    out = tmp_path / "bundle"
    result = runner.invoke(
        app,
        [
            "--db",
            ledger_url,
            "evidence",
            "export",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-02-01T00:00:00Z",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    findings = json.loads((out / "audits" / "hygiene.json").read_text())["findings"]
    assert [(f["finding"], f["who"], f["what"]) for f in findings if "token" in f["finding"]] == [
        ("token-of-deactivated", "service_account:ci", "token tok-ci"),
        ("admin-token", "service_account:ci", "token tok-ci"),
        ("token-never-used", "service_account:ci", "token tok-ci"),
    ]
    assert "token-of-deactivated" in (out / "audits" / "hygiene.csv").read_text()
    report = (out / "report.html").read_text()
    assert "token-of-deactivated" in report and "A service token that was never revoked" in report
    events = [json.loads(line) for line in (out / "events" / "events.jsonl").read_text().splitlines()]
    assert [e["token_id"] for e in events if e["type"] == "TokenIssued"] == ["tok-ci"]
    assert all("secret" not in k or k == "secret_sha256" for e in events for k in e)
