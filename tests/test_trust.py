"""The ledger's trust, tried as an attacker with write access to the database (and no key) would.

- Every TEXT/BLOB column of every side table, edited one at a time (a pickle that would run code,
  or plain junk): nothing runs, no command ends in a traceback, and the edit is caught by `verify`
  or by the write that would rely on it, or it changes no answer.
- Keyed seals: a rewritten history whose seals lost their MACs, whose seals were deleted, or an
  unsealed event appended at the tail fails `verify` with the key, naming the position.
- Times: a backdated head (al_head.at) no longer lets a backdated write through.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from ledger.integrity import KEY_ENV, next_link, seal_mac

runner = CliRunner()
KEY = "correct horse battery staple"


class _Planted:
    """Unpickling this runs `touch MARKER`: proof, if the file appears, that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


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
        cur = conn.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def _history(url: str) -> None:
    led = AccessLedger.open(url, create=True)
    try:
        led.init(org="acme", at="2026-01-01T00:00:00Z")
        led.create_tenant("prod", at="2026-01-01T00:00:00Z")
        for name in ("alice", "bob", "carol"):
            led.create_user(name, at="2026-01-02T00:00:00Z", actor="user:root", id=f"u-{name}")
        led.create_team("ml", at="2026-01-02T00:00:00Z")
        led.add_team_member("ml", "user:bob", at="2026-01-02T00:00:00Z")
        led.create_role(
            "deployer", "tenant", ["pipeline:create", "model:promote"], base="viewer", at="2026-01-03T00:00:00Z"
        )
        led.assign_role("deployer", "user:alice", tenant="prod", at="2026-01-03T00:00:00Z", reason="REQ-1")
        led.assign_role("viewer", "team:ml", tenant="prod", at="2026-01-03T00:00:00Z")
        led.register_connector("aws-prod", "prod", at="2026-01-04T00:00:00Z")
        led.record_connector_access("aws-prod", "prod", "user:alice", "allowed", at="2026-01-05T00:00:00Z", id="s-1")
    finally:
        led.close()


LATER = "2026-01-06T00:00:00Z"
ANSWERS = [
    ["check", "user:alice", "promote", "model/m", "--tenant", "prod", "--at", LATER, "--format", "json"],
    ["check", "user:carol", "read", "model/m", "--tenant", "prod", "--at", LATER, "--format", "json"],
    ["check", "user:bob", "read", "model/m", "--tenant", "prod", "--at", "2026-01-02T12:00:00Z", "--format", "json"],
    ["who-can", "read", "model/m", "--tenant", "prod", "--at", LATER, "--format", "json"],
    ["what-can", "user:alice", "--tenant", "prod", "--at", LATER, "--format", "json"],
    ["export"],
    ["export", "--from", "2026-01-03T00:00:00Z", "--to", "2026-01-04T00:00:00Z"],
]


def _answers(url: str) -> list[tuple[int, str]]:
    out = []
    for args in ANSWERS:
        result = runner.invoke(app, ["--db", url, *args])
        out.append((result.exit_code, result.stdout))
    return out


def _columns(url: str) -> list[tuple[str, str]]:
    """(table, column) for every TEXT or BLOB column of the ledger's own side tables."""
    if "://" not in url:
        tables = [r[0] for r in _sql(url, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'al_%'")]
        return [
            (t, r[1])
            for t in sorted(tables)
            for r in _sql(url, f"PRAGMA table_info({t})")
            if r[2].upper() in ("TEXT", "BLOB")
        ]
    rows = _sql(
        url,
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND left(table_name, 3) = 'al_' AND data_type IN ('text', 'bytea') "
        "ORDER BY table_name, column_name",
    )
    return [(t, c) for t, c in rows]


def _row_key(url: str, table: str) -> str:
    """A column that tells the table's rows apart (al_ids is stored WITHOUT ROWID in SQLite)."""
    if "://" in url:
        return "ctid"
    return "event_id" if table == "al_ids" else "rowid"


def _rowids(url: str, table: str) -> list[Any]:
    return [r[0] for r in _sql(url, f"SELECT {_row_key(url, table)} FROM {table}")]


@pytest.mark.slow
def test_every_side_table_column_edited_runs_nothing_and_is_caught_or_harmless(url_factory, tmp_path):
    reference = url_factory("reference")
    _history(reference)
    runner.invoke(app, ["--db", reference, "check", "user:alice", "read", "model/m", "--tenant", "prod"])
    expected = _answers(reference)
    marker = tmp_path / "pwned"
    payloads = {"pickle": pickle.dumps(_Planted(marker)), "junk": b"\x00garbage\xff{"}
    columns = _columns(reference)
    assert ("al_chain", "at") in columns and ("al_grants", "role") in columns and ("al_ids", "event_id") in columns
    tried = 0
    for table, column in columns:
        for name, payload in payloads.items():
            url = url_factory(f"{table}-{column}")
            _history(url)
            runner.invoke(app, ["--db", url, "check", "user:alice", "read", "model/m", "--tenant", "prod"])
            rows = _rowids(url, table)
            if not rows:
                continue
            key = _row_key(url, table)
            is_blob = column == "data" and table == "al_snapshots"
            value: Any = payload if is_blob else payload.decode("latin-1").replace("\x00", "")
            try:
                _sql(url, f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (value, rows[len(rows) // 2]))
            except Exception:  # noqa: BLE001 - the database itself refuses the value (a key clash): nothing to try
                continue
            tried += 1
            verify = runner.invoke(app, ["--db", url, "verify"])
            answers = _answers(url)
            write = runner.invoke(app, ["--db", url, "user", "create", "dave", "--actor", "system"])
            what = f"{table}.{column} = {name}"
            assert not marker.exists(), f"{what}: the planted pickle ran"
            for result in (verify, write):
                assert result.exit_code in (0, 1, 2), f"{what}: {result.output}"
                assert "Traceback" not in result.output and "unexpected" not in result.output, (
                    f"{what}: {result.output}"
                )
            caught = verify.exit_code == 1 or write.exit_code != 0
            assert caught or answers == expected, f"{what}: not caught by verify, and the answers changed"
            # When a seal was written is evidence of nothing; a seal's MAC is checked when the key is given
            # (see the seal tests below).
            if (table, column) not in {("al_seals", "sealed_at"), ("al_seals", "mac")}:
                assert verify.exit_code == 1, f"{what}: verify did not catch it: {verify.output}"
    assert tried >= 2 * 15


def _rechain_from(url: str, position: int, new_state: bytes) -> None:
    """Replace the event at `position` and recompute every link after it, as someone without the key can."""
    rows = _sql(url, "SELECT position, link FROM al_chain WHERE position = ?", (position - 1,))
    link = rows[0][1] if rows else "0" * 64
    pos_col = "rowid" if "://" not in url else "notification_id"
    oid_col = "originator_id" if "://" not in url else "replace(CAST(originator_id AS TEXT), '-', '')"
    events = _sql(
        url,
        f"SELECT {pos_col}, {oid_col}, originator_version, topic, state FROM stored_events "
        f"WHERE {pos_col} >= ? ORDER BY {pos_col}",
        (position,),
    )
    for pos, oid, version, topic, state in events:
        state = new_state if pos == position else bytes(state)
        if pos == position:
            _sql(url, f"UPDATE stored_events SET state = ? WHERE {pos_col} = ?", (state, pos))
        link = next_link(link, pos, str(oid).replace("-", ""), int(version), topic, state)
        _sql(url, "UPDATE al_chain SET link = ? WHERE position = ?", (link, pos))
        _sql(url, "UPDATE al_seals SET link = ? WHERE position = ?", (link, pos))
    _sql(url, "UPDATE al_head SET link = ?", (link,))


def _keyed_ledger(url: str, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    _history(url)


def _user_event(url: str, position: int) -> bytes:
    pos_col = "rowid" if "://" not in url else "notification_id"
    return bytes(_sql(url, f"SELECT state FROM stored_events WHERE {pos_col} = ?", (position,))[0][0])


def test_a_rewritten_history_with_its_seals_macs_stripped_fails_verify_with_the_key(ledger_url, monkeypatch):
    _keyed_ledger(ledger_url, monkeypatch)
    assert AccessLedger.open(ledger_url).verify().ok
    forged = _user_event(ledger_url, 3).replace(b'"user:root"', b'"user:mallory"')
    _rechain_from(ledger_url, 3, forged)
    _sql(ledger_url, "UPDATE al_seals SET mac = NULL WHERE position >= 3")
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    assert (result.ok, result.first_bad) == (False, 3)
    assert "has no HMAC" in result.problem
    monkeypatch.delenv(KEY_ENV)
    with AccessLedger.open(ledger_url) as led:
        assert led.verify().ok  # without the key, a consistent rewrite cannot be told: the key is the defence


def test_a_rewritten_history_with_its_seals_deleted_fails_verify_with_the_key(ledger_url, monkeypatch):
    _keyed_ledger(ledger_url, monkeypatch)
    forged = _user_event(ledger_url, 3).replace(b'"user:root"', b'"user:mallory"')
    _rechain_from(ledger_url, 3, forged)
    _sql(ledger_url, "DELETE FROM al_seals WHERE position >= 3")
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    monkeypatch.delenv(KEY_ENV)  # with the key, no read answers from that head: it is read without it
    with AccessLedger.open(ledger_url) as led:
        head = led.head()
    assert (result.ok, result.first_bad) == (False, head)
    assert f"no seal at position {head}" in result.problem


def test_an_unsealed_event_appended_at_the_tail_fails_verify_with_the_key(ledger_url, monkeypatch):
    _keyed_ledger(ledger_url, monkeypatch)
    with AccessLedger.open(ledger_url) as led:
        head, _, link = led.store.head()
    # Appended by hand with the right link but no seal (no key), dated after the last event.
    state = orjson.dumps({"type": "UserCreated", "at": "2026-01-06T00:00:00Z", "actor": "system", "user": "mallory"})
    oid, topic = "0" * 31 + "1", "ledger.events:UserCreated"
    if "://" in ledger_url:
        _sql(
            ledger_url,
            "INSERT INTO stored_events (originator_id, originator_version, topic, state, notification_id)"
            " VALUES (?, 1, ?, ?, ?)",
            (oid, topic, state, head + 1),
        )
    else:
        _sql(
            ledger_url,
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) VALUES (?, ?, 1, ?, ?)",
            (head + 1, oid, topic, state),
        )
    new_link = next_link(link, head + 1, oid, 1, topic, state)
    _sql(
        ledger_url,
        "INSERT INTO al_chain (position, at, link) VALUES (?, ?, ?)",
        (head + 1, "2026-01-06T00:00:00Z", new_link),
    )
    _sql(ledger_url, "UPDATE al_head SET position = ?, link = ?, at = ?", (head + 1, new_link, "2026-01-06T00:00:00Z"))
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    assert (result.ok, result.first_bad) == (False, head + 1)
    assert f"no seal at position {head + 1}" in result.problem
    # A seal with a MAC made without the key fails too.
    _sql(
        ledger_url,
        "INSERT INTO al_seals (position, link, mac, sealed_at) VALUES (?, ?, ?, ?)",
        (head + 1, new_link, seal_mac(head + 1, new_link, b"guess"), "2026-01-06T00:00:00Z"),
    )
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    assert (result.ok, result.first_bad) == (False, head + 1) and "wrong HMAC" in result.problem


def test_a_backdated_event_in_the_log_fails_verify_naming_it(ledger_url):
    _history(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        head = led.head()
    old = _user_event(ledger_url, head)
    backdated = old.replace(b'"at":"2026-01-05T00:00:00Z"', b'"at":"2025-06-01T00:00:00Z"')
    assert backdated != old
    _rechain_from(ledger_url, head, backdated)
    _sql(ledger_url, "UPDATE al_chain SET at = ? WHERE position = ?", ("2025-06-01T00:00:00Z", head))
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    assert (result.ok, result.first_bad) == (False, head)
    assert "time went backwards" in result.problem


def test_a_head_set_back_in_time_does_not_let_a_backdated_write_through(ledger_url):
    from ledger import errors as E

    _history(ledger_url)
    _sql(ledger_url, "UPDATE al_head SET at = ?", ("2025-01-01T00:00:00Z",))
    _sql(ledger_url, "UPDATE al_chain SET at = ?", ("2025-01-01T00:00:00Z",))
    with AccessLedger.open(ledger_url) as led:
        with pytest.raises(E.OutOfOrder, match="before the ledger's newest event"):
            led.assign_role("admin", "user:carol", tenant="prod", at="2026-01-04T12:00:00Z")
        # Times are read from the chained event bytes: the edited copies move no answer.
        assert led.position_at("2026-01-04T12:00:00Z") == led.head() - 1
        assert led.time_of(led.head()) == "2026-01-05T00:00:00Z"
        result = led.verify()
    assert not result.ok and "al_chain says position 1 happened at 2025-01-01T00:00:00Z" in result.problem


def test_deleted_id_rows_are_named_by_verify(ledger_url):
    _history(ledger_url)
    _sql(ledger_url, "DELETE FROM al_ids WHERE event_id = 'u-bob'")
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    assert not result.ok and result.first_bad is None
    assert any("al_ids holds 3 id row(s) for the 4 events that carry an id" in p for p in result.derived)


def test_an_id_row_pointing_at_another_event_is_named_by_verify(ledger_url):
    _history(ledger_url)
    _sql(ledger_url, "UPDATE al_ids SET position = position + 1 WHERE event_id = 'u-bob'")
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    assert not result.ok and result.first_bad is None
    assert any("id 'u-bob' points at position" in p and "which does not carry it" in p for p in result.derived)


def test_an_edited_grant_is_named_by_verify(ledger_url):
    _history(ledger_url)
    _sql(
        ledger_url,
        "INSERT INTO al_grants (role, principal, tenant, resource, expires_at) VALUES "
        "('admin', 'user:carol', 'prod', '', NULL)",
    )
    result = runner.invoke(app, ["--db", ledger_url, "verify"])
    assert result.exit_code == 1
    assert "al_grants row ('admin', 'user:carol', 'prod', '') is not implied by the events" in result.output


def _warehouse(url: str, path: Path) -> None:
    from reports.warehouse import Warehouse

    with AccessLedger.open(url) as led, Warehouse.open(led, path) as wh:
        wh.sync()


@pytest.mark.slow
def test_every_warehouse_table_edited_is_named_by_verify(ledger_url, tmp_path):
    import duckdb

    _history(ledger_url)
    path = tmp_path / "warehouse.duckdb"
    _warehouse(ledger_url, path)
    clean = runner.invoke(app, ["--db", ledger_url, "verify", "--warehouse", str(path)])
    assert clean.exit_code == 0, clean.output
    con = duckdb.connect(str(path), read_only=True)
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_name <> 'sync_state' AND table_type = 'BASE TABLE'"
        ).fetchall()
    ]
    varchar = {
        t: [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND data_type = 'VARCHAR' ORDER BY ordinal_position",
                [t],
            ).fetchall()
        ]
        for t in tables
    }
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}
    con.close()
    assert "events" in tables and counts["events"] == 12
    edited = 0
    for table in tables:
        if not counts[table] or not varchar[table]:
            continue
        for edit in (
            f"UPDATE {table} SET \"{varchar[table][0]}\" = 'x' || coalesce(\"{varchar[table][0]}\", '') "
            f"WHERE rowid = (SELECT min(rowid) FROM {table})",
            f"DELETE FROM {table} WHERE rowid = (SELECT max(rowid) FROM {table})",
        ):
            copy = tmp_path / f"{table}-{edited}.duckdb"
            copy.write_bytes(path.read_bytes())
            con = duckdb.connect(str(copy))
            con.execute(edit)
            con.close()
            result = runner.invoke(app, ["--db", ledger_url, "verify", "--warehouse", str(copy)])
            if table == "meta":
                # The schema version is what meta holds: a warehouse whose layout is not this one's is named
                # by verify and built afresh from nothing before anything reads it, so the edit changes no answer.
                from reports.warehouse import Warehouse, compare_with_events

                assert result.exit_code == 0 or "layout this version does not know" in result.stderr, result.output
                with AccessLedger.open(ledger_url) as led:
                    Warehouse.open(led, copy).close()
                    assert compare_with_events(led, copy) == []
                continue
            assert result.exit_code == 1, f"{table}: {edit}: {result.output}"
            assert f"warehouse table {table}:" in result.output, result.output
            edited += 1
    assert edited >= 16


# -- the warehouse, proven before every use ---------------------------------------------------------

AUDIT = ["audit", "review", "--at", LATER, "--format", "json"]


def _audit(url: str, path: Path) -> Any:
    return runner.invoke(app, ["--db", url, *AUDIT, "--warehouse", str(path)])


def _duck(path: Path, *statements: str) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()


@pytest.mark.parametrize(
    "plant",
    [
        (
            "ALTER TABLE assignments RENAME TO assignments_real",
            "CREATE VIEW assignments AS SELECT * FROM assignments_real WHERE principal <> 'user:alice'",
        ),
        ("CREATE MACRO leak(p) AS TABLE SELECT * FROM read_text(p)",),
        ("CREATE TABLE notes AS SELECT 1 AS n",),
    ],
    ids=["view-in-place-of-a-table", "macro", "table"],
)
def test_an_object_planted_in_the_warehouse_is_refused_by_the_audit_and_named_by_verify(ledger_url, tmp_path, plant):
    _history(ledger_url)
    path = tmp_path / "warehouse.duckdb"
    clean = _audit(ledger_url, path)
    assert clean.exit_code == 0, clean.output
    _duck(path, *plant)
    before = path.read_bytes()
    audit = _audit(ledger_url, path)
    assert audit.exit_code == 2 and audit.stdout == ""
    assert "which the ledger never creates" in audit.stderr and len(audit.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before  # refused, not used and not rewritten
    verify = runner.invoke(app, ["--db", ledger_url, "verify", "--warehouse", str(path)])
    assert verify.exit_code == 1 and "which the ledger never creates" in verify.stderr
    path.unlink()
    assert _audit(ledger_url, path).stdout == clean.stdout  # deleted: rebuilt from the events


def test_an_edited_warehouse_row_is_refused_before_the_audit_reads_it(ledger_url, tmp_path):
    _history(ledger_url)
    path = tmp_path / "warehouse.duckdb"
    clean = _audit(ledger_url, path)
    assert '"user:alice"' in clean.stdout
    _duck(path, "UPDATE assignments SET principal = 'user:mallory' WHERE principal = 'user:alice'")
    audit = _audit(ledger_url, path)
    assert audit.exit_code == 2 and audit.stdout == ""
    assert "was edited since its last sync (its bytes are not those the ledger recorded" in audit.stderr
    # The ledger's record of the file deleted as well: nothing proves the file, so it is synced afresh.
    _sql(ledger_url, "DELETE FROM al_warehouses")
    again = _audit(ledger_url, path)
    assert again.exit_code == 0 and again.stdout == clean.stdout
    assert "is synced afresh: the ledger holds no record of it" in again.stderr


def test_with_the_key_a_warehouse_and_its_record_edited_together_are_refused(ledger_url, tmp_path, monkeypatch):
    from reports.warehouse import _file_sha256

    _keyed_ledger(ledger_url, monkeypatch)
    path = tmp_path / "warehouse.duckdb"
    clean = _audit(ledger_url, path)
    assert clean.exit_code == 0, clean.output
    # Someone who can write both files but holds no key: the edit, then the record made to match it,
    # with a MAC made up...
    _duck(path, "UPDATE assignments SET principal = 'user:mallory' WHERE principal = 'user:alice'")
    _sql(ledger_url, "UPDATE al_warehouses SET sha256 = ?, mac = ?", (_file_sha256(str(path)), "f" * 64))
    audit = _audit(ledger_url, path)
    assert audit.exit_code == 2 and "its record's MAC is missing or wrong" in audit.stderr
    monkeypatch.delenv(KEY_ENV)
    # Without the key the record cannot be told from a true one: only the full comparison of verify can.
    assert _audit(ledger_url, path).exit_code == 0
    verify = runner.invoke(app, ["--db", ledger_url, "verify", "--warehouse", str(path)])
    assert verify.exit_code == 1 and "warehouse table assignments" in verify.stderr
    # ...or with none: a record without a MAC proves nothing under the key, so the file is synced afresh
    # from the events (as for a warehouse recorded before the key was set): the edit is gone.
    monkeypatch.setenv(KEY_ENV, KEY)
    _sql(ledger_url, "UPDATE al_warehouses SET mac = NULL")
    again = _audit(ledger_url, path)
    assert again.exit_code == 0 and again.stdout == clean.stdout
    assert f"is synced afresh: its record has no MAC and {KEY_ENV} is set" in again.stderr


# -- the head bounds every read -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    ["UPDATE al_head SET position = 1000000000000", "UPDATE al_head SET position = 7", "DELETE FROM al_head"],
    ids=["far-ahead", "set-back", "deleted"],
)
def test_a_head_moved_or_deleted_is_refused_by_every_reader_and_named_by_verify(ledger_url, edit):
    _history(ledger_url)
    _sql(ledger_url, edit)
    for args in ANSWERS:
        result = runner.invoke(app, ["--db", ledger_url, *args])
        assert result.exit_code == 2, (args, result.output)
        assert "run `access-ledger verify`" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    write = runner.invoke(app, ["--db", ledger_url, "user", "create", "dave", "--actor", "system"])
    assert write.exit_code == 2 and "tampered" in write.stderr
    verify = runner.invoke(app, ["--db", ledger_url, "verify"])
    assert verify.exit_code == 1 and verify.stderr.startswith("TAMPERED")


# -- a column rewritten with a value of another type --------------------------------------------------

RETYPED = [
    ("al_head", "position", "x"),
    ("al_seals", "position", "x"),
    ("al_ids", "position", "x"),
    ("al_snapshots", "position", "x"),
    ("al_snapshots", "data", "x"),
    ("al_chain", "link", b"\x00x"),
    ("al_ids", "event_id", b"u-bob"),
    ("stored_events", "state", 10**12),
]


@pytest.mark.parametrize("table, column, value", RETYPED, ids=[f"{t}.{c}" for t, c, _ in RETYPED])
def test_a_column_rewritten_with_another_type_ends_in_one_line(ledger_url, table, column, value):
    _history(ledger_url)
    runner.invoke(app, ["--db", ledger_url, "check", "user:alice", "read", "model/m", "--tenant", "prod"])
    if "://" in ledger_url:  # PostgreSQL keeps a column's type: the owner changes it first
        kind = "BYTEA" if isinstance(value, bytes) else "TEXT"
        cast = f"convert_to({column}::text, 'UTF8')" if kind == "BYTEA" else f"{column}::text"
        _sql(ledger_url, f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {kind} USING {cast}")
        value = str(value) if not isinstance(value, bytes) else value
        key = "ctid"
    else:
        key = "event_id" if table == "al_ids" else "rowid"
    target = "(SELECT max(notification_id) FROM stored_events)" if table == "stored_events" and key == "ctid" else None
    where = f"notification_id = {target}" if target else f"{key} = (SELECT max({key}) FROM {table})"
    if table == "al_ids":
        where = "event_id = 'u-bob'" if not isinstance(value, bytes) else "CAST(event_id AS TEXT) = 'u-bob'"
    _sql(ledger_url, f"UPDATE {table} SET {column} = ? WHERE {where}", (value,))
    verify = runner.invoke(app, ["--db", ledger_url, "verify"])
    results = [verify] + [runner.invoke(app, ["--db", ledger_url, *args]) for args in ANSWERS]
    results.append(runner.invoke(app, ["--db", ledger_url, "user", "create", "dave", "--actor", "system"]))
    for result in results:
        assert result.exit_code in (0, 1, 2), result.output
        assert "Traceback" not in result.output and "unexpected" not in result.output, result.output
    assert verify.exit_code == 1, verify.output


# -- the stored bytes are the ledger's own encoding ---------------------------------------------------


def test_an_event_rewritten_with_a_repeated_key_fails_verify_even_when_rechained(ledger_url):
    _history(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        position = next(p for p, e in led.read() if e["type"] == "RoleAssigned")
    old = _user_event(ledger_url, position)
    # Read last-wins by the ledger's parser, first-wins by others: one event, two meanings.
    forged = old.replace(b'"role":"deployer"', b'"role":"deployer","r\\u006fle":"admin"')
    assert forged != old
    _rechain_from(ledger_url, position, forged)
    with AccessLedger.open(ledger_url) as led:
        result = led.verify()
    assert (result.ok, result.first_bad) == (False, position)
    assert "not a canonical event" in result.problem
