"""The .sql files shipped with the reports package, and running them with named parameters."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any


@cache
def sql_text(name: str) -> str:
    """The text of reports/sql/NAME (e.g. 'review.sql')."""
    return resources.files("reports").joinpath("sql", name).read_text(encoding="utf-8")


def run_script(con: Any, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run every statement of one .sql file, each with the named parameters it uses; return the last one's rows."""
    import duckdb

    params = params or {}
    rows: list[tuple[Any, ...]] = []
    for statement in duckdb.extract_statements(sql_text(name)):
        used = {k: params[k] for k in statement.named_parameters}
        rows = (con.execute(statement, used) if used else con.execute(statement)).fetchall()
    return rows
