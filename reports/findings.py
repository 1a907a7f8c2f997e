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


# -- the lifecycle of findings (issue 29): stable ids, and the triage decisions recorded in the chain --------

#: Columns of a finding that are facts but not ones to hash: text rebuilt from the instant the audit runs
#: at ("still in force at ..."), use that moves on every day, and the causing positions (hashed on their own).
VOLATILE = frozenset({"detail", "last_used", "positions", "finding_id", "description", "title"})
#: The columns a triaged finding gains in the section "Accepted and suppressed findings".
TRIAGE_COLUMNS = ("finding_state", "decided_by", "decided_at", "decision_reason", "until", "decision")


def kind_of(row: dict[str, Any]) -> str:
    """What kind of finding a row is (its `finding`, or the rule a separation-of-duties row breaks)."""
    return str(row.get("finding") or row.get("rule") or "")


def id_parts(audit: str, row: dict[str, Any]) -> tuple[str, str, str | None, str | None, str]:
    """(audit, kind, principal, scope, cause) of one finding row: what its id is computed from."""
    from ledger.findings import cause_of

    facts = {k: plain(v) for k, v in row.items() if k not in VOLATILE}
    return audit, kind_of(row), row.get("who"), row.get("where"), cause_of(row.get("positions"), facts)


def row_finding_id(audit: str, row: dict[str, Any]) -> str:
    from ledger.findings import finding_id

    return finding_id(*id_parts(audit, row))


def with_finding_ids(audit: str, table: pa.Table) -> pa.Table:
    """The audit's rows with a `finding_id` column: the stable id of each row needing attention (null elsewhere)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = ATTENTION.get(audit, frozenset())
    if "finding_id" in table.column_names or kinds == frozenset():
        return table
    # Only the rows needing attention become Python rows (as needs_attention picks them): an audit of
    # 100,000s of review rows has few findings.
    if kinds is None:
        attention = pa.array(range(table.num_rows), pa.int64())
    elif "finding" in table.column_names:
        wanted = pa.array(sorted(kinds), pa.string())
        attention = pc.indices_nonzero(pc.is_in(table["finding"].cast(pa.string()), value_set=wanted))
    else:
        attention = pa.array([], pa.int64())
    ids: list[str | None] = [None] * table.num_rows
    for i, row in zip(attention.to_pylist(), table.take(attention).to_pylist()):
        ids[i] = row_finding_id(audit, row)
    return table.append_column("finding_id", pa.array(ids, pa.string()))


def fold_decisions(
    events: list[dict[str, Any]], at: str, refused: frozenset[int] = frozenset()
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The triage decisions in force at `at` (canonical UTC text), from the finding events in position order:
    each finding's last decision (accepted, suppressed or reopened), and the suppression rules not reopened.

    An acceptance, suppression or rule at a position in `refused` (one the authority rules did not allow its
    actor to make: reports/authority.py) is as if it had not been made; a reopening is always honoured, as it
    only puts findings back in front of the auditor. So is an acceptance or suppression made before a change
    its finding's cause names."""
    from ledger.authority import instant_key
    from ledger.findings import cause_positions

    key = instant_key(at)
    findings: dict[str, dict[str, Any]] = {}
    rules: dict[str, dict[str, Any]] = {}
    for n, ev in enumerate(events):
        if instant_key(ev["at"]) > key:
            break
        t = ev["type"]
        if t != "FindingReopened" and ev.get("position") in refused:
            continue
        if t in ("FindingAccepted", "FindingSuppressed"):
            at_position = ev.get("position")
            if at_position is not None and any(p >= at_position for p in cause_positions(ev.get("cause") or "")):
                # Made before the changes that cause the finding: it decided about nothing that existed (a
                # standing decision is a suppression rule, which says it is one).
                continue
            state = "accepted" if t == "FindingAccepted" else "suppressed"
            findings[ev["finding"]] = {**ev, "state": state, "n": n}
        elif t == "SuppressionRuleAdded":
            rules[ev["rule"]] = {**ev, "state": "suppressed", "n": n}
        elif t == "FindingReopened" and ev.get("finding"):
            findings[ev["finding"]] = {**ev, "state": "open", "n": n}
        elif t == "FindingReopened":
            rules.pop(ev.get("rule") or "", None)
    live = [r for r in rules.values() if r.get("until") is None or key < instant_key(r["until"])]
    return findings, live


def decision_for(
    audit: str, row: dict[str, Any], fid: str, findings: dict[str, dict[str, Any]], rules: list[dict[str, Any]], at: str
) -> dict[str, Any] | None:
    """The decision that takes this finding out of the rows needing attention at `at`, or None (it is open).

    A decision lapses when its `until` passes; reopening a finding undoes its own decision and any rule
    recorded before the reopening; a new id (the facts changed) has no decision."""
    from ledger.authority import instant_key

    key = instant_key(at)
    own = findings.get(fid)
    floor = own["n"] if own is not None and own["state"] == "open" else -1
    candidates = []
    if own is not None and own["state"] != "open" and (own.get("until") is None or key < instant_key(own["until"])):
        candidates.append(own)
    where = row.get("where")
    for r in rules:
        if r["n"] > floor and r["audit"] == audit and r["kind"] == kind_of(row) and r["principal"] == row.get("who"):
            if r.get("tenant") is None or where == f"tenant:{r['tenant']}":
                candidates.append(r)
    return max(candidates, key=lambda d: d["n"]) if candidates else None


def finding_events(wh: Any, at: Any) -> list[dict[str, Any]]:
    """The finding events up to `at`, in position order, from the warehouse (as the ledger wrote them)."""
    rows = wh.con.execute(
        'SELECT type, iso("at") AS "at", actor, reason, finding, audit, kind, principal, tenant, scope, cause, '
        'iso("until") AS "until", rule, position FROM events WHERE type IN '
        "('FindingAccepted', 'FindingSuppressed', 'SuppressionRuleAdded', 'FindingReopened') "
        'AND "at" <= ?::TIMESTAMP ORDER BY position',
        [at],
    ).fetchall()
    names = ("type", "at", "actor", "reason", "finding", "audit", "kind", "principal", "tenant", "scope", "cause")
    return [dict(zip((*names, "until", "rule", "position"), r)) for r in rows]


def split_triaged(
    audit: str, table: pa.Table, events: list[dict[str, Any]], at: str, refused: frozenset[int] = frozenset()
) -> tuple[pa.Table, pa.Table | None]:
    """The audit's rows without the findings accepted or suppressed at `at` (by decisions not in `refused`),
    and those findings with who decided, when, why and until when (None when there are none)."""
    import pyarrow as pa

    if "finding_id" not in table.column_names or not events:
        return table, None
    findings, rules = fold_decisions(events, at, refused)
    if not findings and not rules:
        return table, None
    keep: list[int] = []
    moved: list[int] = []
    extra: dict[str, list[Any]] = {c: [] for c in TRIAGE_COLUMNS}
    for i, row in enumerate(table.to_pylist()):
        fid = row["finding_id"]
        d = None if fid is None else decision_for(audit, row, fid, findings, rules, at)
        if d is None:
            keep.append(i)
            continue
        moved.append(i)
        extra["finding_state"].append(d["state"])
        extra["decided_by"].append(d["actor"])
        extra["decided_at"].append(d["at"])
        extra["decision_reason"].append(d["reason"])
        extra["until"].append(d.get("until"))
        extra["decision"].append(d.get("rule") or d["finding"])
    if not moved:
        return table, None
    triaged = table.take(pa.array(moved, pa.int64()))
    for c in TRIAGE_COLUMNS:
        triaged = triaged.append_column(c, pa.array(extra[c], pa.string()))
    return table.take(pa.array(keep, pa.int64())), triaged


#: The columns of audits/findings.csv in an evidence bundle: every finding accepted or suppressed at the period's end.
BUNDLE_COLUMNS = (
    "finding_id",
    "audit",
    "kind",
    "who",
    "where",
    "what",
    "since",
    "finding_state",
    "decided_by",
    "decided_at",
    "decision_reason",
    "until",
    "decision",
)


def triaged_table(results: dict[str, AuditResult]) -> pa.Table:
    """The findings every audit moved out of its rows needing attention, one table (BUNDLE_COLUMNS, as text)."""
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    for name, result in results.items():
        if result.triaged is None:
            continue
        for row in result.triaged.to_pylist():
            item = {c: row.get(c) for c in BUNDLE_COLUMNS}
            item["audit"], item["kind"] = name, kind_of(row)
            rows.append({k: None if v is None else str(plain(v)) for k, v in item.items()})
    return pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in BUNDLE_COLUMNS})
