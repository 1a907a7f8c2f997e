"""Which audit rows are findings to act on, and audit rows as plain data: what the evidence bundle
and its HTML report both need (reports/evidence.py writes the bundle, reports/html.py the report)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from reports.audits import AuditResult

#: Which rows of each audit are findings to act on (the rest is the review material around them).
ATTENTION: dict[str, frozenset[str] | None] = {
    "review": frozenset(),
    "least-privilege": frozenset({"dormant-principal"}),
    "secrets": frozenset({"unauthorised-access", "denied-although-authorised"}),
    "sod": None,  # every row: a principal holding both sides of a rule
    "changes": frozenset(),
    "hygiene": frozenset(
        {
            "self-grant",
            "grant-to-deactivated",
            "expired-not-revoked",
            "role-without-holders",
            "empty-team",
            "change-without-reason",
            "confusable-name",
            "token-of-deactivated",
            "admin-token",
            "token-never-used",
            "api-key-of-deactivated",
            "api-key-unused",
        }
    ),
    "reviews": frozenset(
        {
            "overdue-item",
            "rubber-stamp",
            "all-keep",
            "self-review",
            "revocation-not-carried-out",
            "regranted-after-revoke",
            "privileged-not-reviewed",
            "closed-with-own-items-open",
            "unauthorised-close",
        }
    ),
    "leavers": frozenset({"late-deactivation", "access-after-termination"}),
    "authority": None,  # every row: a change its actor was not allowed to make
}
#: Routine rows: review material the report hides until asked ("exceptions only / all rows").
ROUTINE: dict[str, frozenset[str]] = {"secrets": frozenset({"authorised"})}


def row_counts(audit: str, result: AuditResult) -> tuple[int, int, int]:
    """How many of an audit's rows need attention, are routine, and are the rest (review material)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = result.table
    _, attention = attention_order(result)
    routine = 0
    if ROUTINE.get(audit) and "finding" in result.columns:
        kinds = pa.array(sorted(ROUTINE[audit]))
        routine = pc.sum(pc.is_in(table.column("finding"), value_set=kinds)).as_py() or 0
    return attention, routine, table.num_rows - attention - routine


def count_words(attention: int, routine: int = 0, review: int = 0) -> str:
    """The report's words for counts of rows: "2 need attention, 9 routine" (and ", N to review")."""
    return (
        f"{attention:,} need attention"
        + (f", {routine:,} routine" if routine else "")
        + (f", {review:,} to review" if review else "")
    )


def needs_attention(audit: str, row: dict[str, Any]) -> bool:
    """True if this audit row is a finding someone must act on (not review material)."""
    kinds = ATTENTION.get(audit, frozenset())
    return True if kinds is None else row.get("finding") in kinds


def attention_filter(audit: str) -> str:
    """The same as needs_attention, as a SQL predicate over the audit's rows."""
    kinds = ATTENTION.get(audit, frozenset())
    if kinds is None:
        return "TRUE"
    if not kinds:
        return "FALSE"
    return "finding IN (" + ", ".join(f"'{k}'" for k in sorted(kinds)) + ")"


def attention_order(result: AuditResult) -> tuple[tuple[pa.Array, pa.Array] | None, int]:
    """The row indices of an audit's rows needing attention and of the others (each in audit order),
    or None when that is the audit's own order (all rows need attention, or none); and how many
    rows need attention."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = result.table
    kinds = ATTENTION.get(result.name, frozenset())
    if kinds is None:
        return None, table.num_rows
    if not (kinds and "finding" in result.columns):
        return None, 0
    mask = pc.fill_null(pc.is_in(table.column("finding"), value_set=pa.array(sorted(kinds))), False)
    att = pc.indices_nonzero(mask)
    return (att, pc.indices_nonzero(pc.invert(mask))), len(att)


def first_rows(result: AuditResult, limit: int) -> tuple[pa.Table, int]:
    """At most `limit` rows of an audit, those needing attention first, and how many of them need it."""
    import pyarrow as pa

    parts, n_att = attention_order(result)
    if parts is None:
        return result.table.slice(0, limit), min(n_att, limit)
    att, rest = parts
    return (
        result.table.take(pa.concat_arrays([att.slice(0, limit), rest.slice(0, max(0, limit - len(att)))])),
        min(n_att, limit),
    )


def split_rows(
    result: AuditResult, attention_cap: int, other_cap: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first rows needing attention and the first other rows of an audit, as plain dicts."""
    parts, n_att = attention_order(result)
    table = result.table
    # Only the rows wanted are taken out of the table (an audit can have millions of rows).
    if parts is None:
        rows = _plain_rows(table.slice(0, attention_cap if n_att else other_cap))
        return (rows, []) if n_att else ([], rows)
    att, rest = parts
    return _plain_rows(table.take(att.slice(0, attention_cap))), _plain_rows(table.take(rest.slice(0, other_cap)))


def _plain_rows(t: pa.Table) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in r.items()} for r in t.to_pylist()]


def plain(value: Any) -> Any:
    """A warehouse value as plain data: times as canonical UTC text."""
    if isinstance(value, datetime):
        from ledger.timeutil import format_instant

        return format_instant(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
