"""The audits: each a .sql file in reports/sql run against the warehouse with named parameters.

Every finding row carries what an auditor needs to act on it: `who` (the principal), `what`
(the permission, role or event), `where` (`organization` or `tenant:NAME`), `since` (when it
became true) and `positions` (the ledger positions of the events behind it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.errors import AuditParameterError, UnknownAudit
from reports.sql_files import sql_text

if TYPE_CHECKING:
    import pyarrow as pa

    from reports.warehouse import Warehouse

EPOCH = datetime(1970, 1, 1)
SHARED_SQL = "effective.sql"


@dataclass(frozen=True)
class Audit:
    name: str
    title: str
    description: str
    sql_file: str
    uses: tuple[str, ...]  # which of at, start, end, window, rules it takes
    brief: tuple[str, ...] = ()  # the columns a terminal table shows (csv, json, markdown show them all)

    @property
    def sql_files(self) -> tuple[str, ...]:
        """The audit's own query, then the shared definitions it relies on."""
        return (self.sql_file, SHARED_SQL)


AUDITS: dict[str, Audit] = {
    a.name: a
    for a in (
        Audit(
            "review",
            "Access review",
            "Everything each person and service account can do at the chosen moment, tenant by tenant, one row "
            "for each path to it: which role gives it, whether it comes through a team, on which resource, since "
            "when, and when it was last used. "
            "This is the list a manager signs off in a periodic access review.",
            "review.sql",
            ("at",),
            # scope and from_role tell apart two paths to one permission through the same role
            (
                "who",
                "tenant",
                "what",
                "resource_scope",
                "role",
                "via_team",
                "from_role",
                "since",
                "last_used",
                "positions",
            ),
        ),
        Audit(
            "least-privilege",
            "Least-privilege review",
            "Where access is wider than use. For each role a principal holds: the permissions nobody used in "
            "the window. Accounts that did nothing at all in the window (dormant). And for each principal, the "
            "smallest existing role that would still cover everything they actually used.",
            "least_privilege.sql",
            ("at", "window"),
            ("finding", "who", "where", "what", "unused_permissions", "last_used", "positions"),
        ),
        Audit(
            "secrets",
            "Connector-secret accesses",
            "Every read of a service connector's credentials in the period: who, which connector, where, and "
            "whether their roles allowed it at that very moment. Reads that were not authorised and "
            "attempts that were denied are marked.",
            "secrets.sql",
            ("start", "end"),
            ("finding", "who", "connector", "tenant", "since", "outcome", "authorised", "positions"),
        ),
        Audit(
            "sod",
            "Separation of duties",
            "People and service accounts who hold both sides of a conflicting pair of permissions (for example, "
            "building pipelines and promoting model versions to production), by rule, with the roles that give "
            "each side.",
            "sod.sql",
            ("at", "rules"),
            ("rule", "who", "tenant", "what", "left_paths", "right_paths", "since", "positions"),
        ),
        Audit(
            "changes",
            "Permission changes",
            "Every permission gained or lost between two moments, per principal and tenant, with the events "
            "that caused each change (or the expiry of a time-bound grant), who made them and why.",
            "changes.sql",
            ("start", "end"),
            ("finding", "who", "tenant", "what", "since", "events", "actors", "reasons", "positions"),
        ),
        Audit(
            "hygiene",
            "Access hygiene",
            "Housekeeping problems: people who granted access to themselves, access still held by deactivated "
            "accounts, time-bound grants that expired but were never removed, roles nobody holds, teams with "
            "no members, accounts or teams whose names look alike (one could pass for the other), the number "
            "of administrators of each tenant and of the organization, service tokens still in force for deactivated "
            "accounts or with the admin scope, and changes recorded without a reason.",
            "hygiene.sql",
            ("at", "start", "end"),
            ("finding", "who", "where", "what", "since", "detail", "positions"),
        ),
        Audit(
            "reviews",
            "Access review campaigns",
            "How the periodic access reviews went: completion per campaign and reviewer, items left undecided past "
            "the due date, decisions taken faster than anyone could read them, reviewers who kept everything, "
            "decisions about the reviewer's own access or grants, revocations not carried out, access granted again "
            "within 30 days of its revocation, and privileged access no campaign closed in the last 90 days "
            "reviewed. Every population is re-derived from the ledger and checked against its start event.",
            "reviews.sql",
            ("at", "start", "end"),
            ("finding", "who", "where", "what", "campaign", "since", "detail", "positions"),
        ),
        Audit(
            "authority",
            "Authority of changes",
            "Every change whose actor was not allowed to make it at that instant, by the authority rules: someone "
            "who lacked the permission the change needs (for example a viewer granting admin), and changes made by "
            "a deactivated account (a leaver) or by an actor the ledger never recorded; and findings accepted or "
            "suppressed by the principal they are about or by the actor whose change caused them (self-triage). "
            "The actor system (the bootstrap and the platform's automation) is exempt.",
            "authority.sql",
            ("start", "end", "rules"),
            ("finding", "who", "where", "what", "needed", "since", "positions"),
        ),
    )
}


#: The filters each audit answers, as `audit NAME --tenant ...` takes them (filter_findings narrows its rows by
#: the column each names); the evidence export applies to an audit only these, and says which it could not.
FILTER_NAMES = ("tenant", "principal", "connector", "role")
FILTERS: dict[str, frozenset[str]] = {
    "review": frozenset({"principal", "tenant", "role"}),
    "least-privilege": frozenset({"principal", "tenant", "role"}),
    "secrets": frozenset({"principal", "tenant", "connector", "role"}),
    "sod": frozenset({"principal", "tenant"}),
    "changes": frozenset({"principal", "tenant"}),
    "hygiene": frozenset({"principal", "tenant"}),
    "reviews": frozenset({"principal", "tenant"}),
    "authority": frozenset({"principal", "tenant"}),
    "leavers": frozenset({"principal", "tenant"}),
}


def split_filters(name: str, filters: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The filters given that audit `name` answers, and the names of those it cannot (sorted)."""
    answers = FILTERS.get(name, frozenset())
    return {k: v for k, v in filters.items() if k in answers}, sorted(k for k in filters if k not in answers)


@dataclass
class AuditResult:
    name: str
    title: str
    description: str
    columns: list[str]
    sql: dict[str, str]
    params: dict[str, Any]
    table: pa.Table = field(repr=False)
    _rows: list[dict[str, Any]] | None = field(default=None, repr=False)
    #: Findings accepted or suppressed at the audit's instant: out of `table`, with who decided, why, until when.
    triaged: pa.Table | None = field(default=None, repr=False)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The findings as plain dicts: times as canonical UTC text, lists as lists."""
        if self._rows is None:
            self._rows = [{k: _plain(v) for k, v in row.items()} for row in self.table.to_pylist()]
        return self._rows

    def __len__(self) -> int:
        return self.table.num_rows


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        from ledger.timeutil import format_instant

        return format_instant(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _instant(text: str | datetime | None, what: str) -> datetime | None:
    """A naive UTC datetime (DuckDB TIMESTAMP) from ISO text; None stays None."""
    if text is None:
        return None
    from ledger.errors import ValidationError
    from ledger.timeutil import parse_instant

    try:
        return parse_instant(text, what).astimezone(UTC).replace(tzinfo=None)
    except ValidationError as exc:
        raise AuditParameterError(str(exc)) from None


def _window(text: str | timedelta) -> timedelta:
    if isinstance(text, timedelta):
        if text <= timedelta(0):
            raise AuditParameterError("window: must be longer than zero")
        return text
    from ledger.errors import ValidationError
    from ledger.timeutil import parse_duration

    try:
        return parse_duration(text)
    except ValidationError as exc:
        raise AuditParameterError(str(exc)) from None


def audit_params(
    name: str,
    *,
    at: str | None = None,
    start: str | None = None,
    end: str | None = None,
    window: str | timedelta = "90d",
    principal: str | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """The parameters one audit runs with, defaults filled in (now, the beginning, 90 days)."""
    audit = _audit(name)
    now = datetime.now(UTC).replace(tzinfo=None)
    params: dict[str, Any] = {}
    at_dt = _instant(at, "at") or now
    if "at" in audit.uses:
        params["at"] = at_dt
    if "start" in audit.uses or "end" in audit.uses:
        start_dt = _instant(start, "from") or EPOCH
        end_dt = _instant(end, "to") or (at_dt if at is not None else now)
        if start_dt > end_dt:
            raise AuditParameterError(f"from: {_plain(start_dt)} is after to: {_plain(end_dt)}")
        params["start"], params["end"] = start_dt, end_dt
    if "window" in audit.uses:
        span = _window(window)
        params["window_start"] = at_dt - span
        params["window"] = window if isinstance(window, str) else f"{int(span.total_seconds())}s"
    if name == "review":
        params["principal"], params["tenant"] = principal, tenant
    return params


def _audit(name: str) -> Audit:
    try:
        return AUDITS[name]
    except KeyError:
        raise UnknownAudit(f"no audit named {name!r} (choose from {', '.join(AUDITS)})") from None


def use_totals(wh: Warehouse, at: datetime) -> bool:
    """May an audit at `at` read the use totals the sync keeps (is `at` at or after the newest event)?"""
    newest = wh.con.execute('SELECT max("at") FROM events').fetchall()[0][0]
    return newest is None or at >= newest


def _inputs(wh: Warehouse, name: str) -> AbstractContextManager[None]:
    """What an audit reads besides the warehouse file: the review campaigns, re-derived from the events."""
    if name != "reviews":
        return nullcontext()
    from reports.review_audit import registered

    return registered(wh)


def query_table(wh: Warehouse, name: str, query: str, params: dict[str, Any]) -> pa.Table:
    """An audit's query run on the warehouse, as Arrow, its instants as the ledger writes them (text, so every
    output format shows the same thing); a DuckDB error as one WarehouseError line."""
    import duckdb

    from reports.errors import WarehouseError

    try:
        rel = wh.con.sql(query, params=params)
        exprs = [
            f"iso({_quote(c)}) AS {_quote(c)}" if str(t).startswith("TIMESTAMP") else _quote(c)
            for c, t in zip(rel.columns, rel.types)
        ]
        return rel.project(", ".join(exprs)).to_arrow_table()
    except duckdb.Error as exc:
        raise WarehouseError(f"audit {name} failed: {str(exc).strip().splitlines()[0]}") from None


def filter_findings(
    name: str,
    table: pa.Table,
    *,
    principal: str | None = None,
    tenant: str | None = None,
    connector: str | None = None,
    role: str | None = None,
) -> pa.Table:
    """Keep the findings about one principal (`who`), one tenant (`where`), one connector or one role.

    A filter an audit's rows cannot answer is refused rather than silently ignored: a sample that
    looks narrowed but is not would mislead the auditor."""
    import pyarrow.compute as pc

    wanted = {
        "who": principal,
        "where": None if tenant is None else f"tenant:{tenant}",
        "connector": connector,
        "role": role,
    }
    option = {"who": "principal", "where": "tenant", "connector": "connector", "role": "role"}
    for column, value in wanted.items():
        if value is None:
            continue
        if column not in table.column_names:
            raise AuditParameterError(f"{option[column]}: audit {name} has no {column} column to filter on")
        table = table.filter(pc.equal(table[column], value))
    return table


def triage(wh: Warehouse, name: str, table: pa.Table, at: datetime) -> tuple[pa.Table, pa.Table | None]:
    """Give each finding its stable id and move those accepted or suppressed at `at` out of the rows needing
    attention (reports/findings.py); the decisions are the chain's finding events, read from the warehouse,
    less those the authority rules did not allow (they leave the finding needing attention, and `audit
    authority` names them)."""
    from reports.authority import refused_decisions
    from reports.findings import finding_events, split_triaged, with_finding_ids

    table = with_finding_ids(name, table)
    events = finding_events(wh, at)
    if "finding_id" not in table.column_names or not events:
        return table, None
    return split_triaged(name, table, events, _plain(at), refused_decisions(wh))


def run_audit(
    wh: Warehouse,
    name: str,
    *,
    at: str | None = None,
    start: str | None = None,
    end: str | None = None,
    window: str | timedelta = "90d",
    rules: str | Path | None = None,
    principal: str | None = None,
    tenant: str | None = None,
    connector: str | None = None,
    role: str | None = None,
    sync: bool = True,
    authority_rules: str | Path | None = None,
) -> AuditResult:
    """Run one audit (syncing the warehouse first); `at` defaults to now, the period to all of history.
    `rules`: the separation-of-duties rules file; `authority_rules`: the authority rules file (default: shipped)."""
    import duckdb

    audit = _audit(name)
    params = audit_params(name, at=at, start=start, end=end, window=window, principal=principal, tenant=tenant)
    if sync:
        wh.sync()
    shown = {k: _plain(v) for k, v in params.items()}
    if name == "sod":
        from reports.sod import install_rules

        shown["rules"] = install_rules(wh, rules)
    elif name == "authority":
        from reports.authority import install_rules as install_authority_rules

        shown["rules"] = install_authority_rules(wh, authority_rules)
    text = sql_text(audit.sql_file)
    statement = duckdb.extract_statements(text)[-1]
    bound = {k: v for k, v in params.items() if k in statement.named_parameters}
    if "totals" in statement.named_parameters:
        bound["totals"] = use_totals(wh, params["at"])
    if "privileged" in statement.named_parameters:
        from projections.reviews import PRIVILEGED_ACTIONS

        bound["privileged"] = sorted(PRIVILEGED_ACTIONS)
    with _inputs(wh, name):
        table = query_table(wh, name, statement.query, bound)
    filters = {"principal": principal, "tenant": tenant, "connector": connector, "role": role}
    table = filter_findings(name, table, **filters)
    table, triaged = triage(wh, name, table, params.get("at") or params["end"])
    shown.update({k: v for k, v in filters.items() if v is not None})
    wh.confirm()  # no result leaves before the file it was read from is proven (see Warehouse.confirm)
    return AuditResult(
        name=audit.name,
        title=audit.title,
        description=audit.description,
        columns=list(table.column_names),
        sql={f: sql_text(f) for f in audit.sql_files},
        params=shown,
        table=table,
        triaged=triaged,
    )
