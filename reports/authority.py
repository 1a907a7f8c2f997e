"""The authority rules as the warehouse reads them: the temporary table authority.sql joins changes with; and
the triage decisions those rules do not allow, which no audit honours (reports/findings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reports.errors import RulesError

if TYPE_CHECKING:
    from reports.warehouse import Warehouse


def check_rules_file(path: str | Path | None) -> None:
    """Refuse an unusable rules file before a possibly long sync (its preset is checked once the ledger's is known)."""
    from ledger.authority import RulesError as LedgerRulesError
    from ledger.authority import load_rules

    if path is None:
        return
    try:
        load_rules(path, None)
    except LedgerRulesError as exc:
        raise RulesError(str(exc)) from None


def install_rules(wh: Warehouse, path: str | Path | None, only: frozenset[str] | None = None) -> str:
    """Create the temporary table authority_rules that authority.sql reads (the rules of the events `only`
    names, if given); return the rules' source."""
    import pyarrow as pa

    from ledger.authority import RulesError as LedgerRulesError
    from ledger.authority import load_rules

    found = wh.con.execute("SELECT preset FROM events WHERE type = 'OrganizationCreated'").fetchall()
    rows = []
    source = "none (the ledger has no organization yet)"
    if found:
        try:
            rules = load_rules(path, found[0][0])
        except LedgerRulesError as exc:
            raise RulesError(str(exc)) from None
        source = rules.source
        rows = [r for r in rules.by_event.values() if only is None or r.event in only]
    rules_table = pa.table(
        {
            "event": pa.array([r.event for r in rows], pa.string()),
            "permission": pa.array([r.permission for r in rows], pa.string()),
            "permission_type": pa.array([r.type for r in rows], pa.string()),
            "permission_action": pa.array([r.action for r in rows], pa.string()),
            "in_organization": pa.array(["organization" in r.places for r in rows], pa.bool_()),
            "in_tenant": pa.array(["tenant" in r.places for r in rows], pa.bool_()),
        }
    )
    wh.con.register("authority_rules_rows", rules_table)  # (the warehouse's connection resolves no Python variables)
    try:
        wh.con.execute("CREATE OR REPLACE TEMP TABLE authority_rules AS SELECT * FROM authority_rules_rows")
    finally:
        wh.con.unregister("authority_rules_rows")
    return source


#: The decisions that take a finding off the list (a reopening only puts one back, so it is always honoured).
DECISIONS = frozenset({"FindingAccepted", "FindingSuppressed", "SuppressionRuleAdded"})


def refused_decisions(wh: Warehouse) -> frozenset[int]:
    """The positions of the triage decisions the ledger's own authority rules did not allow at their instant:
    those authority.sql flags (an actor without the right, an inactive one, or self-triage).

    Judged by the shipped rules of the ledger's preset, as the write path judges triage (not by a rules file
    given to `audit authority`); a decision's judgement depends only on the events before it, so one answer
    serves every audit instant and is kept for the warehouse's position. It reads the authority SQL, never
    a triaged audit, so the authority audit's own triage does not recurse."""
    from datetime import datetime

    import duckdb

    from reports.errors import WarehouseError
    from reports.sql_files import sql_text

    position = wh.position
    cached = wh.derived.get("refused_decisions")
    if cached is not None and cached[0] == position:
        return cached[1]
    refused: frozenset[int] = frozenset()
    named = ", ".join(f"'{t}'" for t in sorted(DECISIONS))
    decided = wh.con.execute(f"SELECT count(*) FROM events WHERE type IN ({named}) AND actor <> 'system'").fetchall()
    if decided[0][0]:
        install_rules(wh, None, DECISIONS)
        statement = duckdb.extract_statements(sql_text("authority.sql"))[-1]
        bounds = {"start": datetime(1970, 1, 1), "end": datetime(9999, 12, 31)}
        try:
            rows = wh.con.sql(statement.query, params=bounds).project("position").fetchall()
        except duckdb.Error as exc:
            raise WarehouseError(f"authority of triage decisions: {str(exc).strip().splitlines()[0]}") from None
        refused = frozenset(int(r[0]) for r in rows)
    wh.derived["refused_decisions"] = (position, refused)
    return refused
