"""The authority rules as the warehouse reads them: the temporary table authority.sql joins changes with."""

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


def install_rules(wh: Warehouse, path: str | Path | None) -> str:
    """Create the temporary table authority_rules that authority.sql reads; return the rules' source."""
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
        rows = list(rules.by_event.values())
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
