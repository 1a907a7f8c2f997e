"""The ledger database's schema is the ledger's own: checked on every open, before any other query.

Anyone who can write the database can add to its schema, and a schema object runs inside the
ledger's own statements: a trigger can refuse some writes (worded as a lock) or rewrite them, a
view or rule in place of a side table can reshape a read or never end, a check constraint, an
expression index or a column default runs a function on every insert, row-level security hides
rows. On SQLite, `sqlite_master` must hold nothing but the tables and indexes the ledger creates,
each with the SQL it created it with; on PostgreSQL (whose schema may be shared with other
objects), the ledger's tables must be plain tables with exactly their columns, types and default
collations, with no trigger, rule, policy, row-level security, constraint beyond their keys,
index the ledger did not create, or table inheriting from them; and no function or operator in that
schema may bear a built-in's name (one taking the exact types of a call wins over pg_catalog's).
Anything else is named in one line and the ledger is not used.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

from ledger.errors import IntegrityFailure


class ForeignSchema(IntegrityFailure):
    """The ledger's database holds schema objects the ledger did not make."""


def refuse(problems: Sequence[str]) -> None:
    """Raise ForeignSchema naming every problem, if there is any."""
    if problems:
        raise ForeignSchema(
            f"the ledger's database holds what the ledger did not make: {'; '.join(problems)}; "
            "it was edited outside the ledger, and nothing was read from it"
        )


@functools.cache
def sqlite_expected(statements: tuple[str, ...]) -> dict[str, tuple[str, str, str | None]]:
    """{name: (type, table, sql)} of what the statements leave in `sqlite_master`, as SQLite records it."""
    scratch = sqlite3.connect(":memory:")
    try:
        for statement in statements:
            scratch.execute(statement)
        return {
            name: (kind, table, sql)
            for kind, name, table, sql in scratch.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
        }
    finally:
        scratch.close()


def sqlite_problems(rows: Sequence[tuple[Any, ...]], expected: dict[str, tuple[str, str, str | None]]) -> list[str]:
    """What in `sqlite_master` (its (type, name, tbl_name, sql) rows) the ledger did not make."""
    problems = []
    for kind, name, table, sql in rows:
        want = expected.get(name)
        if want is None:
            problems.append(f"{kind} {name}" + (f" on {table}" if kind in ("index", "trigger") else ""))
        elif (kind, table, sql) != want:
            problems.append(
                f"{kind} {name} in place of the ledger's {want[0]}" if kind != want[0] else f"{kind} {name} altered"
            )
    return problems


# Every index the ledger (and eventsourcing, for stored_events) creates on PostgreSQL.
POSTGRES_INDEXES = frozenset({"stored_events_notification_id_idx", "al_entities_ref", "al_grants_principal"})
# The one column default: eventsourcing's sequence (the ledger always names the position itself).
POSTGRES_DEFAULTS = frozenset({("stored_events", "notification_id")})


_SCHEMA_OID = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
# Functions (aggregates, procedures) and operators of the ledger's schema named as a built-in is.
_SHADOWING = (
    "SELECT CASE p.prokind WHEN 'a' THEN 'aggregate ' WHEN 'p' THEN 'procedure ' ELSE 'function ' END || p.proname "
    f"FROM pg_proc p WHERE p.pronamespace = {_SCHEMA_OID} AND EXISTS (SELECT 1 FROM pg_proc b "
    "WHERE b.proname = p.proname AND b.pronamespace = 'pg_catalog'::regnamespace) AND NOT EXISTS (SELECT 1 "
    "FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') "
    "UNION SELECT 'operator ' || o.oprname FROM pg_operator o "
    f"WHERE o.oprnamespace = {_SCHEMA_OID} AND EXISTS (SELECT 1 FROM pg_operator b "
    "WHERE b.oprname = o.oprname AND b.oprnamespace = 'pg_catalog'::regnamespace) AND NOT EXISTS (SELECT 1 "
    "FROM pg_depend d WHERE d.classid = 'pg_operator'::regclass AND d.objid = o.oid AND d.deptype = 'e')"
)


def postgres_problems(c: Any, columns: dict[str, dict[str, str]]) -> list[str]:
    """What on the ledger's tables in the current schema the ledger did not make (c: a store Cursor)."""
    # Looked up by key: the tables by (name, schema), then everything on them by their oids (the
    # catalog of a shared server may hold many schemas).
    c.execute(
        "SELECT oid, relname, relkind, relrowsecurity OR relforcerowsecurity FROM pg_class WHERE relname = "
        "ANY(?) AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
        "ORDER BY relname",
        (list(columns),),
    )
    problems: list[str] = []
    name: dict[int, str] = {}
    for oid, relname, kind, secured in c.fetchall():
        name[oid] = relname
        if kind != "r":
            what = {
                "v": "view",
                "m": "materialized view",
                "f": "foreign table",
                "p": "partitioned table",
                "i": "index",
                "S": "sequence",
            }.get(kind, f"relation of kind {kind}")
            problems.append(f"{what} {relname} in place of the ledger's table")
        elif secured:
            problems.append(f"row-level security on {relname}")
    oids = list(name)
    if not oids:
        return problems
    # One catalog each, no join: planning a join of the catalogs costs more than running it.
    c.execute(
        "SELECT 'trigger ' || tgname, tgrelid FROM pg_trigger WHERE tgrelid = ANY(?::oid[]) AND NOT tgisinternal "
        "UNION ALL SELECT 'rule ' || rulename, ev_class FROM pg_rewrite WHERE ev_class = ANY(?::oid[]) "
        "AND rulename <> '_RETURN' "
        "UNION ALL SELECT 'policy ' || polname, polrelid FROM pg_policy WHERE polrelid = ANY(?::oid[]) "
        "UNION ALL SELECT 'constraint ' || conname, conrelid FROM pg_constraint WHERE conrelid = ANY(?::oid[]) "
        "AND contype NOT IN ('p', 'u', 'n') "
        "UNION ALL SELECT 'index ' || indexrelid::regclass::text, indrelid FROM pg_index WHERE "
        "indrelid = ANY(?::oid[]) AND (NOT indisprimary AND NOT indexrelid::regclass::text = ANY(?) "
        "OR indexprs IS NOT NULL OR indpred IS NOT NULL) "
        # A table inheriting from a ledger table has its rows read with the parent's (a forged event at a
        # genuine position, seen by every reader); one a ledger table inherits from, no better.
        "UNION ALL SELECT 'inheriting table ' || inhrelid::regclass::text, inhparent FROM pg_inherits "
        "WHERE inhparent = ANY(?::oid[]) UNION ALL SELECT 'parent table ' || inhparent::regclass::text, inhrelid "
        "FROM pg_inherits WHERE inhrelid = ANY(?::oid[])",
        (oids, oids, oids, oids, oids, list(POSTGRES_INDEXES), oids, oids),
    )
    problems.extend(sorted(f"{what} on {name[relid]}" for what, relid in c.fetchall()))
    # pg_catalog comes first in the search path only among equal signatures: a function taking the exact
    # types a call passes (to_json(text) beside the built-in to_json(anyelement), convert_from(bytea,
    # text) for a literal) wins, and would run inside the ledger's own queries. Members of an extension
    # (installed by whoever may install one) are not the ledger's concern. A schema usually holds no
    # function or operator at all: the names are compared only when it does (planning that costs more).
    c.execute(
        f"SELECT 1 FROM pg_proc WHERE pronamespace = {_SCHEMA_OID} UNION ALL "
        f"SELECT 1 FROM pg_operator WHERE oprnamespace = {_SCHEMA_OID} LIMIT 1"
    )
    if c.fetchall():
        c.execute(_SHADOWING)
        problems.extend(sorted(f"{what} shadowing the built-in" for (what,) in c.fetchall()))
    c.execute(
        "SELECT attrelid, attname, format_type(atttypid, atttypmod), attcollation IN (0, 100), atthasdef, "
        "attgenerated <> '' FROM pg_attribute WHERE attrelid = ANY(?::oid[]) AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attrelid, attnum",
        (oids,),
    )
    for relid, column, kind, collation_ok, has_default, generated in c.fetchall():
        table = name[relid]
        want = columns[table].get(column)
        if want is None:
            problems.append(f"column {table}.{column}")
        elif kind != want or not collation_ok or generated or has_default != ((table, column) in POSTGRES_DEFAULTS):
            problems.append(f"column {table}.{column} altered ({kind})")
    return problems


def postgres_watch(c: Any, tables: Sequence[str]) -> tuple[str, Any]:
    """(a statement, its value now): the value changes whenever anything `postgres_problems` looks at changes.

    The statement reads, by key, the catalog rows of the ledger's tables (their oids found now: one dropped
    loses its row) and of their columns, with the transaction that last wrote each (any ALTER of a table or
    a column rewrites its row: renamed, moved, secured, retyped, given a default or a collation), and every
    object that depends on those tables (a trigger, rule, policy, constraint, index, default or inheriting
    table) or on their schema (a function or operator bearing a built-in's name, a view, a table): one more,
    one fewer or one replaced changes the count or the sum or maximum of their oids (new oids only grow).
    Numbers only: formatting and hashing the rows as text cost several times more. A process that keeps the
    ledger open runs it at the start of every write (prepared: no planning) and checks the schema again
    only when its value moved. Every name in it is schema-qualified, so nothing planted in the ledger's
    schema can stand in for what it calls."""
    c.execute(
        "SELECT n.oid, c.oid FROM pg_catalog.pg_namespace n LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
        "AND c.relname = ANY(?) WHERE n.nspname = pg_catalog.current_schema() ORDER BY c.oid",
        (list(tables),),
    )
    rows = c.fetchall()
    namespace = int(rows[0][0]) if rows else 0
    oids = "'{%s}'::pg_catalog.oid[]" % ",".join(str(int(oid)) for _, oid in rows if oid is not None)  # noqa: UP031
    int8, written = "::pg_catalog.int8", "xmin::pg_catalog.text::pg_catalog.int8"
    sql = (
        "SELECT pg_catalog.count(*), pg_catalog.sum(k), pg_catalog.max(k), pg_catalog.sum(x), pg_catalog.max(x) "
        f"FROM (SELECT oid{int8}, {written} FROM pg_catalog.pg_class WHERE oid = ANY({oids}) "
        f"UNION ALL SELECT attrelid{int8}, {written} FROM pg_catalog.pg_attribute WHERE attrelid = ANY({oids}) "
        f"AND attnum > 0 UNION ALL SELECT objid{int8}, classid{int8} FROM pg_catalog.pg_depend "
        # pg_class is catalog 1259, pg_namespace 2615.
        f"WHERE refclassid = '1259'::pg_catalog.oid AND refobjid = ANY({oids}) "
        f"OR refclassid = '2615'::pg_catalog.oid AND refobjid = '{namespace}'::pg_catalog.oid) f(k, x)"
    )
    c.execute(sql)
    return sql, tuple(c.fetchone())
