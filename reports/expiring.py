"""Time-bound grants that end soon: one row per grant, with its holders' last use.

Built on the review audit at the same instant (the same effective paths, the same last-use rules), so
the two can never disagree: a grant shows here exactly when its review rows carry an `expires_at`
inside the window. Nothing is read from the warehouse that the review audit does not already read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from reports.audits import AuditResult, _instant, _plain, _window, run_audit

if TYPE_CHECKING:
    from reports.warehouse import Warehouse

NAME = "expiring"
TITLE = "Grants expiring soon"
DESCRIPTION = (
    "Time-bound grants whose end falls within the window after the chosen moment, one row per grant "
    "(principal, tenant, role, team, resource scope): when it ends, who granted it and why, and when its "
    "holder last used any permission it gives, so an owner can renew what is used and let the rest lapse."
)
BRIEF = ("who", "where", "role", "via_team", "expires_at", "ends_in", "last_used", "granted_by", "positions")
COLUMNS = [
    "finding",
    "who",
    "where",
    "what",
    "tenant",
    "role",
    "via_team",
    "resource_scope",
    "expires_at",
    "ends_in",
    "granted_at",
    "granted_by",
    "grant_reason",
    "permissions",
    "last_used",
    "uses",
    "positions",
]


def _span(delta: timedelta) -> str:
    """3d 4h, 5h 12min, 40s: how long until the end, as people read it."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}min" if minutes else ""]
    text = " ".join(p for p in parts if p)
    return text or f"{secs}s"


def run_expiring(
    wh: Warehouse,
    *,
    within: str | timedelta = "7d",
    at: str | None = None,
    principal: str | None = None,
    tenant: str | None = None,
    role: str | None = None,
    sync: bool = True,
) -> AuditResult:
    """The grants ending in (at, at + within], from the review audit at `at` (default now)."""
    import pyarrow as pa

    span = _window(within)
    at_dt = _instant(at, "at") or datetime.now(UTC).replace(tzinfo=None)
    review = run_audit(wh, "review", at=_plain(at_dt), principal=principal, tenant=tenant, role=role, sync=sync)
    at_text, end_dt = _plain(at_dt), at_dt + span
    grants: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in review.rows:
        ends = row["expires_at"]
        # compared as instants: canonical text does not sort by time ("...00.5Z" < "...00Z")
        ends_dt = _instant(ends, "expires_at") if ends else None
        if ends_dt is None or not (at_dt < ends_dt <= end_dt):
            continue
        key = (row["who"], row["where"], row["role"], row["via_team"], row["resource_scope"], ends)
        g = grants.get(key)
        if g is None:
            g = grants[key] = {
                "finding": "expiring",
                "who": row["who"],
                "where": row["where"],
                "what": f"{row['role']} ends {ends}",
                "tenant": row["tenant"],
                "role": row["role"],
                "via_team": row["via_team"],
                "resource_scope": row["resource_scope"],
                "expires_at": ends,
                "ends_in": _span(ends_dt - at_dt),
                "granted_at": row["granted_at"],
                "granted_by": row["granted_by"],
                "grant_reason": row["grant_reason"],
                "permissions": [],
                "last_used": None,
                "uses": 0,
                "positions": row["positions"],
            }
        g["permissions"].append(row["what"])
        g["uses"] += int(row["uses"] or 0)
        if row["last_used"] and (
            g["last_used"] is None or _instant(row["last_used"], "last_used") > _instant(g["last_used"], "last_used")
        ):
            g["last_used"] = row["last_used"]
    rows = sorted(
        grants.values(), key=lambda g: (_instant(g["expires_at"], "expires_at"), g["who"], g["where"], g["role"])
    )
    for g in rows:
        g["permissions"] = " ".join(sorted(set(g["permissions"])))
    table = pa.Table.from_pylist(rows, schema=_schema()) if rows else _schema().empty_table()
    params = {"at": at_text, "within": within if isinstance(within, str) else f"{int(span.total_seconds())}s"}
    params.update({k: v for k, v in (("principal", principal), ("tenant", tenant), ("role", role)) if v})
    return AuditResult(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        columns=list(COLUMNS),
        sql=review.sql,
        params=params,
        table=table,
    )


def _schema() -> Any:
    import pyarrow as pa

    ints = {"uses"}
    lists = {"positions"}
    return pa.schema(
        [(c, pa.int64() if c in ints else pa.list_(pa.int64()) if c in lists else pa.string()) for c in COLUMNS]
    )
