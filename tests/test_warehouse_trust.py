"""The warehouse file as untrusted input (issue 25): its catalog, its layout, the file DuckDB reads.

- A macro planted in a file of an older layout does not survive the rebuild (a new file, built from
  nothing), and `verify` names the older layout.
- A column retyped with a collation, or extra columns shadowing computed ones, are refused before any
  query runs and named by `verify`, even with the ledger's record of the file made to match.
- A file swapped underneath DuckDB after the proof opened the genuine one is refused.
- A FIFO at the file or its write-ahead log is refused at once (no command blocks).
- Property: random DDL on a copy of a synced warehouse is refused before any query runs, or changes
  no audit output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trust import LATER, _history, _sql
from typer.testing import CliRunner

from access_ledger.cli import app

runner = CliRunner()
AUDIT = ["audit", "review", "--at", LATER, "--format", "json"]


def _audit(url: str, path: Path) -> Any:
    return runner.invoke(app, ["--db", url, *AUDIT, "--warehouse", str(path)])


def _verify(url: str, path: Path) -> Any:
    return runner.invoke(app, ["--db", url, "verify", "--warehouse", str(path)])


def _duck(path: Path, *statements: str) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()


def _rerecord(url: str, path: Path) -> None:
    """The attacker (no key) makes the ledger's record of the warehouse match the edited file."""
    _sql(url, "UPDATE al_warehouses SET sha256 = ?", (hashlib.sha256(path.read_bytes()).hexdigest(),))


def _refused(result: Any, *words: str) -> None:
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def _user_objects(path: Path) -> list[Any]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            "SELECT function_name FROM duckdb_functions() WHERE NOT internal AND database_name = current_database()"
        ).fetchall()
    finally:
        con.close()


def test_a_macro_in_a_file_of_an_older_layout_does_not_survive_the_rebuild(ledger_url, tmp_path):
    _history(ledger_url)
    path = tmp_path / "warehouse.duckdb"
    clean = _audit(ledger_url, path)
    assert clean.exit_code == 0, clean.output
    _duck(
        path,
        "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
        "CREATE MACRO epoch(x) AS 0",
        "CREATE MACRO leak(p) AS TABLE SELECT * FROM read_text(p)",
    )
    verify = _verify(ledger_url, path)
    assert verify.exit_code == 1 and "layout" in verify.stderr, verify.output
    again = _audit(ledger_url, path)
    assert again.exit_code == 0 and again.stdout == clean.stdout, again.output
    assert _user_objects(path) == []  # a new file: nothing of the old one is left
    assert _verify(ledger_url, path).exit_code == 0


@pytest.mark.parametrize(
    "plant",
    [
        ("ALTER TABLE assignments ALTER resource SET DATA TYPE VARCHAR COLLATE NOCASE",),
        (
            "ALTER TABLE assignments ADD COLUMN tenant_from TIMESTAMP",
            "ALTER TABLE assignments ADD COLUMN tenant_position BIGINT DEFAULT 1",
            "UPDATE assignments SET tenant_position = 2",
        ),
        ("ALTER TABLE assignments ALTER actor SET DEFAULT 'user:root'",),
        ("CREATE TYPE principal AS ENUM ('user:alice')",),
        ("CREATE SEQUENCE s",),
        ("CREATE INDEX i ON assignments (principal)",),
    ],
    ids=["collation", "shadow-columns", "default", "type", "sequence", "index"],
)
def test_a_changed_column_or_object_is_refused_before_any_query_and_named_by_verify(ledger_url, tmp_path, plant):
    _history(ledger_url)
    path = tmp_path / "warehouse.duckdb"
    assert _audit(ledger_url, path).exit_code == 0
    _duck(path, *plant)
    _rerecord(ledger_url, path)
    before = path.read_bytes()
    _refused(_audit(ledger_url, path), "which the ledger never creates")
    assert path.read_bytes() == before
    verify = _verify(ledger_url, path)
    assert verify.exit_code == 1 and "which the ledger never creates" in verify.stderr, verify.output


def test_a_file_swapped_underneath_duckdb_is_refused(ledger_url, tmp_path, monkeypatch):
    import duckdb

    _history(ledger_url)
    path = tmp_path / "warehouse.duckdb"
    clean = _audit(ledger_url, path)
    assert '"user:alice"' in clean.stdout
    genuine, tampered = tmp_path / "genuine.duckdb", tmp_path / "tampered.duckdb"
    shutil.copy(path, tampered)
    _duck(tampered, "DELETE FROM assignments WHERE principal = 'user:alice'")
    real = duckdb.connect

    def watcher(database: Any = ":memory:", *args: Any, **kwargs: Any) -> Any:
        # The watcher: the tampered file in place while DuckDB opens it, the genuine one back at once.
        if str(database) == str(path):
            os.replace(path, genuine)
            os.replace(tampered, path)
            try:
                return real(database, *args, **kwargs)
            finally:
                os.replace(path, tampered)
                os.replace(genuine, path)
        return real(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", watcher)
    _refused(_audit(ledger_url, path), str(path))
    monkeypatch.setattr(duckdb, "connect", real)
    assert _audit(ledger_url, path).stdout == clean.stdout


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "access-ledger"
    return subprocess.run([str(exe), "--db", url, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("where", ["file", "wal"])
def test_a_fifo_at_the_warehouse_or_its_log_is_refused_at_once(ledger_url, tmp_path, where):
    _history(ledger_url)
    path = tmp_path / "warehouse.duckdb"
    if where == "wal":
        assert _audit(ledger_url, path).exit_code == 0
    os.mkfifo(str(path) + (".wal" if where == "wal" else ""))
    audit = _cli(ledger_url, *AUDIT, "--warehouse", str(path))
    assert audit.returncode == 2 and audit.stdout == "" and "not a regular file" in audit.stderr, audit
    assert len(audit.stderr.strip().splitlines()) == 1
    verify = _cli(ledger_url, "verify", "--warehouse", str(path))
    assert verify.returncode == 1 and "not a regular file" in verify.stderr, verify


# -- property: random DDL is refused before any query, or changes no audit output ------------------------

_DDL = st.sampled_from(
    [
        "CREATE MACRO strftime(a, b) AS 'x'",
        "CREATE MACRO epoch(x) AS 0",
        "CREATE MACRO coalesce2(a) AS a",
        "CREATE MACRO read_all(p) AS TABLE SELECT * FROM read_text(p)",
        "CREATE VIEW v AS SELECT 1 AS a",
        "CREATE TYPE mood AS ENUM ('a', 'b')",
        "CREATE SEQUENCE seq START 5",
        "CREATE SCHEMA other",
        "CREATE TABLE other_table (a INTEGER)",
        "CREATE INDEX ix ON events (position)",
        "ALTER TABLE assignments ALTER principal SET DATA TYPE VARCHAR COLLATE NOCASE",
        "ALTER TABLE assignments ALTER resource SET DATA TYPE VARCHAR COLLATE NOCASE",
        "ALTER TABLE role_grants ALTER permission SET DATA TYPE VARCHAR COLLATE NOCASE",
        "ALTER TABLE assignments ADD COLUMN tenant_from TIMESTAMP",
        "ALTER TABLE events ADD COLUMN extra VARCHAR",
        "ALTER TABLE assignments ALTER reason SET DEFAULT 'x'",
        "ALTER TABLE assignments ALTER reason SET DATA TYPE VARCHAR(10)",
        "ALTER TABLE usage_totals ALTER uses SET DATA TYPE DOUBLE",
        "ALTER TABLE role_chain ALTER depth SET DATA TYPE BIGINT",
        "ALTER TABLE memberships DROP COLUMN reason",
        "ALTER TABLE teams RENAME COLUMN created_by TO deleted_by2",
        "ALTER TABLE connectors RENAME TO connectors_old",
        "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        "DELETE FROM meta WHERE key = 'schema_version'",
    ]
)


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> tuple[str, Path, str]:
    folder = tmp_path_factory.mktemp("prop")
    url = str(folder / "ledger.db")
    _history(url)
    path = folder / "warehouse.duckdb"
    clean = _audit(url, path)
    assert clean.exit_code == 0, clean.output
    return url, path, clean.stdout


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(_DDL, min_size=1, max_size=3, unique=True))
def test_random_ddl_is_refused_before_any_query_or_changes_no_audit_output(synced, tmp_path_factory, edits):
    url, path, clean = synced
    folder = tmp_path_factory.mktemp("copy")
    copy = folder / "warehouse.duckdb"
    shutil.copy(path, copy)
    _duck(copy, *edits)
    _rerecord(url, copy)
    result = _audit(url, copy)
    if result.exit_code == 0:
        assert result.stdout == clean, edits
    else:
        _refused(result, "which the ledger never creates")
