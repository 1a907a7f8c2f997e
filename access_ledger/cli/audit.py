"""The audit commands: each syncs the DuckDB warehouse from the ledger, runs one audit, prints its findings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from access_ledger.cli.common import (
    Format,
    FormatOption,
    OutOption,
    PeriodOption,
    emit,
    emit_text,
    handled,
    open_ledger,
    render,
    when,
)
from ledger.timeutil import CLI_TIME_HELP, CLI_TIME_HELP_AGAIN

WarehouseOption = Annotated[
    Path | None,
    typer.Option(
        "--warehouse",
        help="The DuckDB warehouse file (default: beside a SQLite ledger, <ledger>.duckdb; "
        "./access-ledger-warehouse.duckdb for PostgreSQL).",
    ),
]
AtOption = Annotated[
    str | None, typer.Option("--at", help=f"The moment the audit looks at (default now): {CLI_TIME_HELP}.")
]
FromOption = Annotated[
    str | None,
    typer.Option(
        "--from", help=f"Start of the period, inclusive (default: the beginning of the ledger): {CLI_TIME_HELP}."
    ),
]
ToOption = Annotated[
    str | None, typer.Option("--to", help=f"End of the period, inclusive (default now; {CLI_TIME_HELP_AGAIN}).")
]
WindowOption = Annotated[
    str,
    typer.Option(
        "--window",
        help="How far back use counts: 90d, 12w, 36h, 30min, 3mo (30 days each), 1y (365 days); a bare m is refused.",
    ),
]
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="A TOML file of separation-of-duties rules (default: the shipped set).")
]
PrincipalOption = Annotated[
    str | None, typer.Option("--principal", help="Only this user:NAME or service_account:NAME.")
]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Only findings in this tenant (organization-wide ones are left out).")
]
ConnectorOption = Annotated[
    str | None, typer.Option("--connector", help="Only this service connector (in any tenant, or in --tenant).")
]
RoleOption = Annotated[str | None, typer.Option("--role", help="Only findings about this role.")]

SHOW_PROGRESS_FROM = 100_000

audit_app = typer.Typer(
    help="Audits for access reviews and auditors, answered by the DuckDB warehouse (synced first).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _run(ctx: typer.Context, name: str, warehouse: Path | None, fmt: Format, out: Path | None, **params: Any) -> None:
    """Open the ledger and its warehouse, sync, run one audit (the call the service makes), print the findings."""
    from access_ledger import api
    from reports.audits import AUDITS

    with handled():
        led = open_ledger(ctx)
        try:
            answer = api.audit(
                led, name, warehouse, sync=_sync, note=lambda text: typer.echo(f"note: {text}", err=True), **params
            )
        finally:
            led.close()
        _show(answer["result"], AUDITS[name].brief, fmt, out)


def _audited(
    ctx: typer.Context, warehouse: Path | None, audit: Callable[[Any], Any], check: Callable[[Any], None] | None = None
) -> Any:
    """Open the ledger (`check` it before a possibly long sync) and its warehouse, sync it, run `audit` on it."""
    from reports.warehouse import Warehouse

    led = open_ledger(ctx)
    try:
        if check is not None:
            check(led)
        wh = Warehouse.open(led, warehouse)
        try:
            if wh.rebuilt:
                typer.echo(f"note: the warehouse {wh.path} is synced afresh: {wh.rebuilt}", err=True)
            _sync(wh)
            return audit(wh)
        finally:
            wh.close()
    finally:
        led.close()


def _show(result: Any, brief: tuple[str, ...], fmt: Format, out: Path | None) -> None:
    """Print an audit's rows: a terminal table shows its brief columns, the other formats carry every column;
    the caption counts the rows as the report does (need attention, routine, to review)."""
    from access_ledger.api import triaged_rows
    from reports.findings import TRIAGE_COLUMNS, count_words, row_counts

    columns, caption = result.columns, None
    triaged = triaged_rows(result)
    if fmt is Format.table:
        columns = [c for c in ("finding_id", *brief) if c in result.columns] or result.columns
        caption = f"{count_words(*row_counts(result.name, result))}; --format csv|json|markdown shows every column"
        if triaged:
            caption += f"; {len(triaged):,} accepted or suppressed, below"
    scope = _scope(result)
    if not triaged:
        emit(result.rows, fmt, out, columns=columns, title=result.title, caption=caption, scope=scope)
        return
    if fmt is Format.table or fmt is Format.markdown:
        # Their own section, out of the rows needing attention: who decided, why, until when.
        extra = [c for c in ("finding_id", "finding", "rule", "who", "where", "what") if c in result.columns]
        text = render(result.rows, fmt, columns, result.title, caption, scope) + "\n"
        text += render(triaged, fmt, [*extra, *TRIAGE_COLUMNS], "Accepted and suppressed findings")
        what = f"{len(result.rows):,} rows and {len(triaged):,} accepted or suppressed as {fmt.value}"
        emit_text(text, out, what + (f" ({scope['text']})" if scope else ""))
    elif fmt is Format.json:
        # The rows as before, each triaged finding after them with its decision (finding_state says which).
        emit(result.rows + triaged, fmt, out, scope=scope)
    else:
        emit(result.rows + triaged, fmt, out, columns=[*result.columns, *TRIAGE_COLUMNS], scope=scope)


def _scope(result: Any) -> dict[str, Any] | None:
    """What a filtered audit's output says of itself (None when unfiltered)."""
    from reports.check_bundle import FILTER_NAMES, filter_words

    filters = {k: result.params[k] for k in FILTER_NAMES if result.params.get(k) is not None}
    if not filters:
        return None
    text = filter_words(filters).replace("not in this bundle", "not listed")
    return {"filters": filters, "text": text}


def _sync(wh: Any) -> None:
    """Bring the warehouse up to date, with a progress bar on a terminal when there is much to do."""
    pending = wh.pending()
    if pending < SHOW_PROGRESS_FROM or not sys.stderr.isatty():
        wh.sync()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("syncing the warehouse"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sync", total=pending)
        wh.sync(lambda n: bar.advance(task, n))


@audit_app.command("review")
def review(
    ctx: typer.Context,
    at: AtOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    role: RoleOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Every principal's effective permissions per tenant, the path to each, and when each was last used."""
    _run(ctx, "review", warehouse, fmt, out, at=at, principal=principal, tenant=tenant, role=role)


@audit_app.command("least-privilege")
def least_privilege(
    ctx: typer.Context,
    at: AtOption = None,
    window: WindowOption = "90d",
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    role: RoleOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Permissions held but unused in the window, dormant principals, and the smallest role covering each one's use."""
    _run(
        ctx, "least-privilege", warehouse, fmt, out, at=at, window=window, principal=principal, tenant=tenant, role=role
    )


@audit_app.command("secrets")
def secrets(
    ctx: typer.Context,
    start: FromOption = None,
    end: ToOption = None,
    period: PeriodOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    connector: ConnectorOption = None,
    role: RoleOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Every connector-secret access in the period, whether it was authorised at that instant, and denied attempts."""
    _run(
        ctx,
        "secrets",
        warehouse,
        fmt,
        out,
        start=start,
        end=end,
        period=period,
        principal=principal,
        tenant=tenant,
        connector=connector,
        role=role,
    )


@audit_app.command("sod")
def sod(
    ctx: typer.Context,
    at: AtOption = None,
    rules: RulesOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Principals holding both sides of a separation-of-duties rule."""
    _run(ctx, "sod", warehouse, fmt, out, at=at, rules=rules, principal=principal, tenant=tenant)


@audit_app.command("changes")
def changes(
    ctx: typer.Context,
    start: FromOption = None,
    end: ToOption = None,
    period: PeriodOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Permissions gained and lost between two times, with the events, actors and reasons behind each."""
    _run(ctx, "changes", warehouse, fmt, out, start=start, end=end, period=period, principal=principal, tenant=tenant)


@audit_app.command("hygiene")
def hygiene(
    ctx: typer.Context,
    at: AtOption = None,
    start: FromOption = None,
    end: ToOption = None,
    period: PeriodOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Self-grants, grants to deactivated principals, expired grants never revoked, roles with no holders, empty
    teams, admin counts, and changes without a reason (in the --from/--to period)."""
    _run(
        ctx,
        "hygiene",
        warehouse,
        fmt,
        out,
        at=at,
        start=start,
        end=end,
        period=period,
        principal=principal,
        tenant=tenant,
    )


@audit_app.command("reviews")
def reviews(
    ctx: typer.Context,
    at: AtOption = None,
    start: FromOption = None,
    end: ToOption = None,
    period: PeriodOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Access review campaigns started or closed in the period: completion per reviewer, overdue items, rubber
    stamps, all-keep reviewers, self-reviews, revocations not carried out or re-granted, and privileged access
    no campaign closed in the 90 days before --at reviewed."""
    _run(
        ctx,
        "reviews",
        warehouse,
        fmt,
        out,
        at=at,
        start=start,
        end=end,
        period=period,
        principal=principal,
        tenant=tenant,
    )


AuthorityRulesOption = Annotated[
    Path | None,
    typer.Option("--rules", help="A TOML file of authority rules (default: the shipped rules of the ledger's preset)."),
]


@audit_app.command("authority")
def authority(
    ctx: typer.Context,
    start: FromOption = None,
    end: ToOption = None,
    period: PeriodOption = None,
    rules: AuthorityRulesOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Changes in the period whose actor was not allowed to make them at that instant (lacked the permission the
    authority rules ask for, or was deactivated or never recorded); system is exempt."""
    _run(
        ctx,
        "authority",
        warehouse,
        fmt,
        out,
        start=start,
        end=end,
        period=period,
        authority_rules=rules,
        principal=principal,
        tenant=tenant,
    )


HrOption = Annotated[
    Path,
    typer.Option(
        "--hr",
        help="CSV of the people HR says have left: a header, then person (user:NAME, or a bare NAME) and "
        "terminated_at (or termination_time): ISO-8601, a date (midnight UTC), or a time without zone (UTC).",
    ),
]
SlaOption = Annotated[
    str,
    typer.Option(
        "--sla",
        help="How soon after the termination the account must be deactivated: 24h, 2d, 30min (the units of --window).",
    ),
]


@audit_app.command("leavers")
def leavers(
    ctx: typer.Context,
    hr: HrOption,
    sla: SlaOption = "24h",
    at: AtOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """People HR says have left: when each account was deactivated and each grant removed, secret reads and
    accesses after the termination, and deactivations later than the SLA."""
    with handled():
        from reports.leavers import BRIEF, read_hr, run_leavers, sla_span

        at = when(at, "at")
        # A bad file or SLA is refused before a possibly long sync.
        sla_span(sla)
        people = read_hr(hr)

        def recorded(led: Any) -> None:
            from access_ledger import api

            api.require_recorded(led, principal, tenant, None)

        result = _audited(
            ctx,
            warehouse,
            lambda wh: run_leavers(wh, people, sla=sla, at=at, sync=False, principal=principal, tenant=tenant),
            recorded,
        )
        _show(result, BRIEF, fmt, out)


@audit_app.command("expiring")
def expiring(
    ctx: typer.Context,
    within: Annotated[
        str, typer.Option("--within", help="How far ahead to look: 7d, 2w, 36h (the units of --window).")
    ] = "7d",
    at: AtOption = None,
    principal: PrincipalOption = None,
    tenant: TenantOption = None,
    role: RoleOption = None,
    warehouse: WarehouseOption = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Time-bound grants ending within --within after --at (default now), one row per grant, with who granted it,
    why, and its holder's last use of it."""
    with handled():
        from access_ledger import api
        from reports.audits import _window
        from reports.expiring import BRIEF, run_expiring

        at = when(at, "at")
        _window(within)  # a bad window is refused before a possibly long sync
        led = open_ledger(ctx)
        try:
            api.require_recorded(led, principal, tenant, None)
            api.require_filters(led, None, tenant, role)
        finally:
            led.close()
        result = _audited(
            ctx,
            warehouse,
            lambda wh: run_expiring(
                wh, within=within, at=at, principal=principal, tenant=tenant, role=role, sync=False
            ),
        )
        _show(result, BRIEF, fmt, out)
