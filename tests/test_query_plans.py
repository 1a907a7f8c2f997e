"""The queries of the import and sync paths keep their plans inside a long write transaction.

Inside an import, PostgreSQL's statistics still describe the tables as they were when the
transaction began (empty, for a new ledger), so a plan chosen on them can walk every row written so
far once per looked-up row: quadratic in the import's size. This test records every SELECT the
import and the warehouse sync send, EXPLAINs each one in the same transaction (once per chunk of
rows written, so the later ones see a transaction that has inserted some 100,000 rows), and fails
on any full scan of a table that grows with the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from ledger import store as store_module
from ledger.app import AccessLedger

# Tables that grow with the number of events: never read in full to answer a lookup.
GROWING = {"stored_events", "al_ids", "al_chain", "al_seals"}


def _history(path: Path, n: int) -> int:
    """n events, every one with an id, so that a second import of the file takes the id look-up path."""
    lines = [
        {"type": "OrganizationCreated", "name": "acme", "preset": "zenml-pro"},
        {"type": "TenantCreated", "tenant": "prod"},
        *({"type": "UserCreated", "user": f"u{i}"} for i in range(50)),
        *({"type": "RoleAssigned", "role": "viewer", "principal": f"user:u{i}", "tenant": "prod"} for i in range(50)),
    ]
    while len(lines) < n:
        i = len(lines)
        lines.append(
            {
                "type": "ResourceAccessed",
                "principal": f"user:u{i % 50}",
                "tenant": "prod",
                "resource": f"model/m{i % 13}",
                "action": "read",
                "outcome": "allowed",
            }
        )
    with open(path, "wb") as f:
        for i, event in enumerate(lines):
            stamp = f"2026-01-{1 + i // 86400:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
            f.write(orjson.dumps({**event, "at": stamp, "actor": "system", "id": f"e{i}"}) + b"\n")
    return len(lines)


def _index_driven(plan: dict[str, Any]) -> bool:
    """An index look-up, or a bitmap of them (`IN (a, b)` gives a BitmapOr of two Bitmap Index Scans)."""
    if "Index Cond" in plan:
        return True
    return plan["Node Type"] == "BitmapOr" and all(_index_driven(p) for p in plan.get("Plans", []))


def _full_scans_pg(plan: dict[str, Any]) -> list[str]:
    found = []
    relation = plan.get("Relation Name")
    if relation in GROWING:
        keyed = "Index Cond" in plan or any(_index_driven(p) for p in plan.get("Plans", []))
        if plan["Node Type"] == "Seq Scan" or not keyed:
            found.append(f"{plan['Node Type']} on {relation}")
    for child in plan.get("Plans", []):
        found.extend(_full_scans_pg(child))
    return found


def _full_scans_sqlite(rows: list[Any]) -> list[str]:
    return [r[3] for r in rows if r[3].startswith("SCAN ") and r[3].split()[1] in GROWING]


@pytest.mark.slow
def test_import_and_sync_queries_never_scan_the_log_in_full(ledger_url, tmp_path, monkeypatch):
    history = tmp_path / "history.jsonl"
    total = _history(history, 110_000)
    lines = history.read_bytes().splitlines()
    with AccessLedger.open(ledger_url, create=True) as led:
        led.import_lines(lines[:10_000])  # committed: the second import looks up its first 10,000 ids

    chunk = [0]
    explained: dict[tuple[str, int], list[str]] = {}
    original_insert, original_execute = store_module.Store.insert_events, store_module.Cursor.execute

    def insert_events(self, c, rows):
        chunk[0] += 1
        return original_insert(self, c, rows)

    def execute(self, sql, params=()):
        key = (" ".join(sql.split()), chunk[0])
        if key[0].upper().startswith("SELECT") and key not in explained:
            if self.before is not None:
                self.before()
            if self.postgres:
                self.raw.execute("EXPLAIN (FORMAT JSON) " + self._sql(sql), params)
                plan = self.raw.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                explained[key] = _full_scans_pg(plan[0]["Plan"])
            else:
                self.raw.execute("EXPLAIN QUERY PLAN " + sql, params)
                explained[key] = _full_scans_sqlite(self.raw.fetchall())
        return original_execute(self, sql, params)

    monkeypatch.setattr(store_module.Store, "insert_events", insert_events)
    monkeypatch.setattr(store_module.Cursor, "execute", execute)
    with AccessLedger.open(ledger_url) as led:
        result = led.import_lines(lines, workers=1)
        assert (result.written, result.skipped) == (total - 10_000, 10_000)
        from reports.warehouse import Warehouse

        if led.store.postgres:
            # Fresh statistics, as autovacuum may or may not have gathered them by now: the plan the
            # sync gets must not hang on when they were last taken.
            with led.store.transaction(write=True) as c:
                c.execute("ANALYZE stored_events")
        with Warehouse.open(led, tmp_path / "warehouse.duckdb") as wh:
            # Chunks of a small part of the log, as on a large ledger: a whole-table scan per chunk
            # there is quadratic. (One chunk covering the whole table is rightly read in one scan.)
            wh.sync(chunk_size=5_000)
    assert chunk[0] >= 5, "the import wrote fewer chunks than expected: the test no longer covers it"
    queries = {sql for sql, _ in explained}
    assert any("al_ids" in q for q in queries) and any("al_chain" in q for q in queries), queries
    bad = {sql: scans for (sql, _), scans in explained.items() if scans}
    assert not bad, json.dumps(bad, indent=1)
