"""Tamper evidence: verify names the first bad position after any edit of the stored log."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ledger.app import AccessLedger
from ledger.integrity import read_digest


@pytest.fixture(autouse=True, params=["one walk", "segments"])
def walk(request, monkeypatch):
    """Every test runs twice: verify walking the log once, and walking it in segments of 4 events in
    two worker processes (as it does from PARALLEL_FROM events on)."""
    import ledger.integrity as integrity

    if request.param == "segments":
        monkeypatch.setattr(integrity, "PARALLEL_FROM", 1)
        monkeypatch.setattr(integrity, "SEGMENT_MIN", 4)
        monkeypatch.setattr(integrity.os, "cpu_count", lambda: 2)
    else:
        monkeypatch.setattr(integrity, "PARALLEL_FROM", 10**12)
    return request.param


def build(path: str, n_users: int = 30) -> AccessLedger:
    led = AccessLedger.open(path, create=True)
    led.init(org="acme", at="2026-01-01T00:00:00Z")
    led.create_tenant("prod", at="2026-01-01T00:00:00Z")
    for i in range(n_users):
        led.create_user(f"u{i}", at=f"2026-01-02T00:00:{i:02d}Z")
    return led


@pytest.fixture
def sqlite_ledger(tmp_path):
    path = str(tmp_path / "l.db")
    led = build(path)
    yield path, led
    led.close()


def raw(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_untouched_ledger_verifies_clean(led):
    for i in range(5):
        led.create_user(f"u{i}", at="2026-01-02T00:00:00Z")
    result = led.verify()
    assert result.ok and result.events == 6 and result.first_bad is None


def test_changed_bytes_are_caught_at_their_position(sqlite_ledger):
    path, led = sqlite_ledger
    with raw(path) as con:
        con.execute("UPDATE stored_events SET state = replace(state, 'u7', 'u8') WHERE rowid = 10")
    result = led.verify()
    assert not result.ok
    assert result.first_bad == 10
    assert "does not match its hash chain link" in result.problem


@pytest.mark.parametrize(
    "column, value",
    [
        ("state", None),
        ("state", 42),
        ("topic", None),
        ("topic", 7),
        ("originator_version", "x"),
        ("originator_version", None),
        ("originator_id", None),
        ("originator_id", 3.5),
    ],
)
def test_a_column_rewritten_with_another_type_or_emptied_is_caught_at_its_position(sqlite_ledger, column, value):
    path, led = sqlite_ledger
    with raw(path) as con:
        con.execute(f"UPDATE stored_events SET {column} = ? WHERE rowid = 10", (value,))
    result = led.verify()
    assert (result.ok, result.first_bad) == (False, 10)
    assert "does not match its hash chain link" in result.problem


def test_a_rewritten_link_where_a_segment_starts_is_caught_at_its_position(sqlite_ledger):
    path, led = sqlite_ledger
    with raw(path) as con:  # segments of 4 start at 1, 5, 9, ...: position 9's walk starts from this link
        con.execute("UPDATE al_chain SET link = ? WHERE position = 8", ("f" * 64,))
    result = led.verify()
    assert (result.ok, result.first_bad, result.events) == (False, 8, 7)
    assert "does not match its hash chain link" in result.problem


def test_a_long_untouched_ledger_verifies_clean_with_its_seals(tmp_path, monkeypatch):
    import ledger.integrity as integrity

    monkeypatch.setattr(integrity, "SEAL_EVERY", 7)
    monkeypatch.setattr("ledger.app.SEAL_EVERY", 7)
    monkeypatch.setenv(integrity.KEY_ENV, "k")
    led = build(str(tmp_path / "s.db"), 40)
    result = led.verify()
    assert (result.ok, result.events, result.head, result.seals) == (
        True,
        42,
        42,
        42,
    )  # every write seals its last position
    assert result.link == led.store.head()[2]
    monkeypatch.delenv(integrity.KEY_ENV)
    assert led.verify().notes == [
        "42 seal(s) carry an HMAC but ACCESS_LEDGER_SEAL_KEY is not set: their keys were not checked"
    ]
    led.close()


def test_deleted_row_is_caught_at_its_position(sqlite_ledger):
    path, led = sqlite_ledger
    with raw(path) as con:
        con.execute("DELETE FROM stored_events WHERE rowid = 12")
    result = led.verify()
    assert (result.ok, result.first_bad) == (False, 12)
    assert "missing" in result.problem


def test_inserted_row_is_caught(sqlite_ledger):
    path, led = sqlite_ledger
    with raw(path) as con:
        state = json.dumps(
            {"type": "UserCreated", "at": "2026-01-03T00:00:00Z", "actor": "system", "user": "mallory"}
        ).encode()
        con.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
            "VALUES (33, 'abc', 1, 'ledger.events:UserCreated', ?)",
            (state,),
        )
    result = led.verify()
    assert (result.ok, result.first_bad) == (False, 33)


def test_swapped_rows_are_caught_at_the_first(sqlite_ledger):
    path, led = sqlite_ledger
    with raw(path) as con:
        a = con.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid = 5"
        ).fetchone()
        b = con.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid = 9"
        ).fetchone()
        con.execute("DELETE FROM stored_events WHERE rowid IN (5, 9)")
        con.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) VALUES (5, ?, ?, ?, ?)",
            b,
        )
        con.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) VALUES (9, ?, ?, ?, ?)",
            a,
        )
    result = led.verify()
    assert (result.ok, result.first_bad) == (False, 5)


def test_rewritten_chain_is_caught_by_seals_when_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCESS_LEDGER_SEAL_KEY", "auditor-secret")
    path = str(tmp_path / "k.db")
    led = build(path, 5)
    with raw(path) as con:
        # An attacker edits an event and recomputes the whole chain and the seal links, but cannot forge MACs.
        con.execute("UPDATE stored_events SET state = replace(state, 'u3', 'zz') WHERE rowid = 6")
        from ledger.integrity import next_link

        link = "0" * 64
        rows = con.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events ORDER BY rowid"
        ).fetchall()
        for pos, oid, ver, topic, state in rows:
            link = next_link(link, pos, oid, ver, topic, state.encode() if isinstance(state, str) else state)
            con.execute("UPDATE al_chain SET link = ? WHERE position = ?", (link, pos))
            con.execute("UPDATE al_seals SET link = ? WHERE position = ?", (link, pos))
        con.execute("UPDATE al_head SET link = ?", (link,))
    result = led.verify()
    assert not result.ok
    assert result.first_bad == 6
    assert "wrong HMAC" in result.problem
    led.close()


def test_truncated_tail_is_caught_by_the_digest(sqlite_ledger, tmp_path):
    path, led = sqlite_ledger
    digest_file = tmp_path / "digest.json"
    digest_file.write_text(json.dumps(led.digest()))
    with raw(path) as con:
        # Remove the last three events and every trace of them, head included.
        con.execute("DELETE FROM stored_events WHERE rowid > 29")
        con.execute("DELETE FROM al_chain WHERE position > 29")
        con.execute("DELETE FROM al_seals WHERE position > 29")
        link = con.execute("SELECT link FROM al_chain WHERE position = 29").fetchone()[0]
        at = con.execute("SELECT at FROM al_chain WHERE position = 29").fetchone()[0]
        con.execute("UPDATE al_head SET position = 29, link = ?, at = ?", (link, at))
    # The write model still holds what the removed events created: verify names it.
    derived = led.verify()
    assert not derived.ok and derived.first_bad is None
    assert any("al_entities row ('user', 'u29') is not implied by the events" in p for p in derived.derived)
    with raw(path) as con:
        con.execute("DELETE FROM al_entities WHERE kind = 'user' AND name IN ('u27', 'u28', 'u29')")
        con.execute("DELETE FROM al_ids WHERE position > 29")
    assert led.verify().ok  # self-consistent again: only the digest kept outside can tell
    result = led.verify(read_digest(digest_file))
    assert (result.ok, result.first_bad) == (False, 30)
    assert "truncated tail" in result.problem


def test_truncated_tail_without_fixing_the_head_is_caught(sqlite_ledger):
    path, led = sqlite_ledger
    with raw(path) as con:
        con.execute("DELETE FROM stored_events WHERE rowid > 30")
    result = led.verify()
    assert (result.ok, result.first_bad) == (False, 31)


def test_writing_onto_a_truncated_log_is_refused(sqlite_ledger):
    from ledger.errors import IntegrityFailure

    path, led = sqlite_ledger
    with raw(path) as con:
        con.execute("DELETE FROM stored_events WHERE rowid = 32")
    with pytest.raises(IntegrityFailure, match="run `access-ledger verify`"):
        led.create_user("x", at="2026-01-05T00:00:00Z")
