"""The ledger file's schema is the ledger's own: tried as an insider who can write the database.

- A trigger that refuses some writes (passing itself off as a lock), a view in place of a side
  table, and the other objects a database can carry that run code or reshape reads on PostgreSQL
  (rules, row-level security, check constraints, expression indexes, extra columns): every
  command refuses the ledger in one line naming them, writes nothing, and `verify` names them.
- One event stored far past the others with a consistent head: no reader walks the empty
  positions; the gap is named at once.
- The ledger file and its journals must be regular files: a FIFO or a device is refused, never read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from ledger.integrity import GENESIS_LINK, next_link

runner = CliRunner()
EXE = shutil.which("access-ledger") or str(Path(sys.executable).with_name("access-ledger"))
LATER = "2026-01-06T00:00:00Z"
CHECK = ["check", "user:alice", "read", "model/m", "--tenant", "prod", "--at", LATER]
UNASSIGN = ["role", "unassign", "viewer", "--from", "user:otto", "--tenant", "prod", "--actor", "system"]


def _sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the ledger's database as its owner would, outside the ledger's code."""
    if "://" not in url:
        con = sqlite3.connect(url, isolation_level=None)
        try:
            cur = con.execute(sql, params)
            return cur.fetchall() if cur.description else []
        finally:
            con.close()
    import psycopg

    base, _, query = url.partition("?")
    schema = dict(part.split("=", 1) for part in query.split("&"))["schema"]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(sql.replace("?", "%s") if params else sql, params or None)
        return cur.fetchall() if cur.description else []


def _history(url: str) -> None:
    led = AccessLedger.open(url, create=True)
    try:
        led.init(org="acme", at="2026-01-01T00:00:00Z")
        led.create_tenant("prod", at="2026-01-01T00:00:00Z")
        for name in ("alice", "otto"):
            led.create_user(name, at="2026-01-02T00:00:00Z", actor="user:root", id=f"u-{name}")
        led.assign_role("viewer", "user:alice", tenant="prod", at="2026-01-03T00:00:00Z", reason="REQ-1")
        led.assign_role("viewer", "user:otto", tenant="prod", at="2026-01-03T00:00:00Z", reason="REQ-2")
    finally:
        led.close()


_TABLES = [
    "stored_events",
    "al_head",
    "al_chain",
    "al_seals",
    "al_ids",
    "al_entities",
    "al_members",
    "al_grants",
    "al_snapshots",
    "al_warehouses",
]


def _content(url: str) -> str:
    """A digest of every row of the ledger's tables as the owner reads them (the planted objects aside)."""
    h = hashlib.sha256()
    for table in _TABLES:
        if "://" not in url:
            plain = _sql(url, "SELECT type FROM sqlite_master WHERE name = ?", (table,)) == [("table",)]
        else:
            plain = _sql(
                url,
                "SELECT relkind FROM pg_class WHERE relname = ? AND relnamespace = current_schema()::regnamespace",
                (table,),
            ) == [("r",)]
        source = table if plain else f"{table}_kept"
        for row in sorted(repr(r) for r in _sql(url, f"SELECT * FROM {source}")):
            h.update(row.encode())
    return h.hexdigest()


def _run(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed command in its own process: one that would run for ever is stopped (and fails the test)."""
    try:
        return subprocess.run([EXE, "--db", url, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(args)}` still running after {timeout} s")


def _refused(result: Any, *named: str) -> None:
    """One line on stderr naming each object, a non-zero exit, no traceback."""
    stderr = result.stderr
    assert result.returncode if hasattr(result, "returncode") else result.exit_code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr and "unexpected" not in stderr, stderr
    for name in named:
        assert name in lines[0], (name, lines[0])


# -- a trigger: attacker SQL inside every write ----------------------------------------------------


def _plant_trigger(url: str) -> None:
    """Any removal of otto's access fails, worded as a transient lock."""
    if "://" not in url:
        _sql(
            url,
            "CREATE TRIGGER keep_otto BEFORE INSERT ON stored_events WHEN NEW.topic LIKE '%RoleUnassigned%' "
            "AND CAST(NEW.state AS TEXT) LIKE '%otto%' BEGIN SELECT RAISE(ABORT, 'database is locked'); END",
        )
    else:
        _sql(
            url,
            "CREATE FUNCTION keep_otto_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.topic LIKE '%RoleUnassigned%' AND convert_from(NEW.state, 'UTF8') LIKE '%otto%' THEN "
            "RAISE EXCEPTION 'database is locked'; END IF; RETURN NEW; END $$",
        )
        _sql(
            url, "CREATE TRIGGER keep_otto BEFORE INSERT ON stored_events FOR EACH ROW EXECUTE FUNCTION keep_otto_fn()"
        )


def test_a_trigger_on_the_events_is_refused_on_open_and_named_by_verify(ledger_url):
    _history(ledger_url)
    _plant_trigger(ledger_url)
    before = _content(ledger_url)
    for args in (UNASSIGN, CHECK, ["user", "deactivate", "otto", "--actor", "system"], ["export"]):
        result = runner.invoke(app, ["--db", ledger_url, *args])
        assert result.exit_code == 2, (args, result.output)
        _refused(result, "trigger keep_otto")
    assert _content(ledger_url) == before
    verify = runner.invoke(app, ["--db", ledger_url, "verify"])
    assert verify.exit_code == 1 and verify.stderr.startswith("TAMPERED"), verify.output
    _refused(verify, "trigger keep_otto")


# -- a view in place of a side table ----------------------------------------------------------------

SPIN = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r WHERE n = 0"


def _plant_view(url: str, table: str) -> None:
    """The table renamed aside and a view of the same rows in its place that never ends."""
    _sql(url, f"ALTER TABLE {table} RENAME TO {table}_kept")
    _sql(url, f"CREATE VIEW {table} AS SELECT k.* FROM {table}_kept k WHERE NOT EXISTS ({SPIN})")


@pytest.mark.parametrize("table", ["al_head", "al_chain"])
def test_a_view_in_place_of_a_side_table_is_refused_at_once_and_named_by_verify(ledger_url, table):
    _history(ledger_url)
    _plant_view(ledger_url, table)
    before = _content(ledger_url)
    for args in (CHECK, UNASSIGN):
        result = _run(ledger_url, *args, timeout=20)
        assert result.returncode == 2, (args, result.stderr)
        _refused(result, f"view {table}")
    assert _content(ledger_url) == before
    verify = _run(ledger_url, "verify", timeout=20)
    assert verify.returncode == 1 and verify.stderr.startswith("TAMPERED"), verify.stderr
    _refused(verify, f"view {table}")


# -- SQLite: nothing in sqlite_master but what the ledger made ---------------------------------------

FOREIGN_SQLITE = {
    "index": ("CREATE INDEX planted ON al_grants (tenant)", "index planted"),
    "table": ("CREATE TABLE planted (x)", "table planted"),
    "view": ("CREATE VIEW planted AS SELECT 1", "view planted"),
    "stat": ("ANALYZE", "table sqlite_stat1"),
    # Same name, other SQL: a default that is not the ledger's.
    "altered": ("ALTER TABLE al_seals ADD COLUMN x TEXT DEFAULT 'y'", "table al_seals"),
}


@pytest.mark.parametrize("plant", FOREIGN_SQLITE, ids=list(FOREIGN_SQLITE))
def test_any_object_the_ledger_did_not_make_is_refused_on_sqlite(tmp_path, plant):
    url = str(tmp_path / "ledger.db")
    _history(url)
    sql, named = FOREIGN_SQLITE[plant]
    _sql(url, sql)
    result = runner.invoke(app, ["--db", url, *CHECK])
    assert result.exit_code == 2, result.output
    _refused(result, named)
    verify = runner.invoke(app, ["--db", url, "verify"])
    assert verify.exit_code == 1 and named in verify.stderr, verify.output


def test_sqlite_connections_run_with_trusted_schema_off(tmp_path):
    url = str(tmp_path / "ledger.db")
    _history(url)
    with AccessLedger.open(url) as led:
        with led.store.transaction(write=False) as c:
            assert c.execute("PRAGMA trusted_schema").fetchone()[0] == 0


# -- PostgreSQL: what runs inside a write or reshapes a read ------------------------------------------

FOREIGN_POSTGRES = {
    "rule": (
        "CREATE RULE keep_otto AS ON INSERT TO stored_events WHERE convert_from(NEW.state, 'UTF8') LIKE '%otto%'"
        " DO INSTEAD NOTHING",
        "rule keep_otto",
    ),
    "policy": (
        "ALTER TABLE stored_events ENABLE ROW LEVEL SECURITY; ALTER TABLE stored_events FORCE ROW LEVEL "
        "SECURITY; CREATE POLICY hide ON stored_events USING (convert_from(state, 'UTF8') NOT LIKE '%otto%')",
        "row-level security on stored_events",
    ),
    "check": (
        "ALTER TABLE stored_events ADD CONSTRAINT keep_otto CHECK (convert_from(state, 'UTF8') NOT LIKE "
        "'%RoleUnassigned%otto%')",
        "constraint keep_otto",
    ),
    "index": ("CREATE INDEX planted ON al_grants ((lower(principal)))", "index planted"),
    "column": ("ALTER TABLE al_ids ADD COLUMN planted TEXT DEFAULT md5(random()::text)", "column al_ids.planted"),
}


@pytest.fixture
def postgres_url(tmp_path):
    """A new, empty ledger on PostgreSQL only (its own kinds of object); CI always has the server."""
    from conftest import PG, _drop_schema, make_url

    if not PG:
        pytest.skip("set ACCESS_LEDGER_TEST_PG to run the PostgreSQL-only checks")
    url, schema = make_url("postgres", tmp_path)
    yield url
    _drop_schema(schema)


@pytest.mark.parametrize("plant", FOREIGN_POSTGRES, ids=list(FOREIGN_POSTGRES))
def test_any_object_that_runs_code_or_reshapes_a_read_is_refused_on_postgres(postgres_url, plant):
    ledger_url = postgres_url
    _history(ledger_url)
    sql, named = FOREIGN_POSTGRES[plant]
    for statement in sql.split("; "):
        _sql(ledger_url, statement)
    before = _content(ledger_url)
    result = runner.invoke(app, ["--db", ledger_url, *UNASSIGN])
    assert result.exit_code == 2, result.output
    _refused(result, named)
    assert _content(ledger_url) == before
    verify = runner.invoke(app, ["--db", ledger_url, "verify"])
    assert verify.exit_code == 1 and named in verify.stderr, verify.output


# -- one event far past the others ----------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2], ids=["one", "two"])
def test_an_event_stored_far_past_the_others_is_a_gap_named_at_once(ledger_url, count):
    _history(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        first_missing = led.head() + 1
    link = GENESIS_LINK
    for position in range(10**12 - count + 1, 10**12 + 1):
        state = orjson.dumps({"type": "UserCreated", "at": LATER, "actor": "system", "user": f"m{position}"})
        oid, topic = f"{position:032x}", "ledger.events:UserCreated"
        if "://" in ledger_url:
            _sql(
                ledger_url,
                "INSERT INTO stored_events (originator_id, originator_version, topic, state, "
                "notification_id) VALUES (?, 1, ?, ?, ?)",
                (oid, topic, state, position),
            )
        else:
            _sql(
                ledger_url,
                "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
                "VALUES (?, ?, 1, ?, ?)",
                (position, oid, topic, state),
            )
        # Chained as the head check reads it: from nothing, or from the event just before.
        link = next_link(link, position, oid, 1, topic, state)
        _sql(ledger_url, "INSERT INTO al_chain (position, at, link) VALUES (?, ?, ?)", (position, LATER, link))
    _sql(ledger_url, "UPDATE al_head SET position = ?, link = ?, at = ?", (10**12, link, LATER))
    before = _content(ledger_url)
    for args in (CHECK, ["who-can", "read", "model/m", "--tenant", "prod"], ["export"]):
        result = _run(ledger_url, *args, timeout=20)
        assert result.returncode == 2, (args, result.stderr)
        _refused(result, f"no event at position {first_missing},")
    assert _content(ledger_url) == before
    verify = _run(ledger_url, "verify", timeout=60)
    assert verify.returncode == 1 and f"position {first_missing}" in verify.stderr, verify.stderr


# -- regular files only ---------------------------------------------------------------------------

# A ledger file linked to a regular file is read where the link points; a journal never is.
NOT_REGULAR = [
    (kind, suffix)
    for kind in ("fifo", "device", "link")
    for suffix in ("", "-wal", "-shm", "-journal")
    if (kind, suffix) != ("link", "")
]


@pytest.mark.parametrize("kind, suffix", NOT_REGULAR, ids=[f"{k}{s or '-ledger'}" for k, s in NOT_REGULAR])
def test_a_fifo_device_or_linked_journal_is_refused_without_blocking(tmp_path, kind, suffix):
    url = os.path.realpath(tmp_path / "ledger.db")
    _history(url)
    target = Path(url + suffix)
    target.unlink(missing_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not the ledger's\n")
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero" if kind == "device" else elsewhere)
    for args in (CHECK, UNASSIGN, ["verify"]):
        result = _run(url, *args, timeout=20)
        assert result.returncode == 2, (args, result.stderr)
        _refused(result, f"{target} is not a regular file")
    assert elsewhere.read_text() == "not the ledger's\n"


def test_an_event_removed_from_the_middle_is_named_by_a_whole_read(ledger_url):
    _history(ledger_url)
    pos_col = "rowid" if "://" not in ledger_url else "notification_id"
    _sql(ledger_url, f"DELETE FROM stored_events WHERE {pos_col} = 3")
    result = runner.invoke(app, ["--db", ledger_url, "export"])
    assert result.exit_code == 2, result.output
    _refused(result, "no event at position 3,")
