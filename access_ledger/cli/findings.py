"""finding accept|suppress|reopen|list: the lifecycle of audit findings, as events in the chain (issue 29)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from access_ledger.cli.common import (
    ActorOption,
    Format,
    FormatOption,
    OutOption,
    ReasonOption,
    check_actor,
    default_actor,
    emit,
    handled,
    open_ledger,
    when,
)
from ledger.timeutil import CLI_TIME_HELP

finding_app = typer.Typer(
    help="Triage audit findings: accept or suppress them (with a reason, until a date), reopen, list.",
    no_args_is_help=True,
)
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help=f"The decision lapses then and the finding comes back: {CLI_TIME_HELP}."),
]
LIST_COLUMNS = ["finding_id", "audit", "kind", "principal", "scope", "state", "decided_by", "decision_reason", "until"]


class State(str, Enum):
    open = "open"
    accepted = "accepted"
    suppressed = "suppressed"
    all = "all"


def register(app: typer.Typer) -> None:
    app.add_typer(finding_app, name="finding")


def _decide(
    ctx: typer.Context, fid: str, accept: bool, reason: str | None, until: str | None, actor: str | None
) -> None:
    from access_ledger import triage

    with handled():
        until_at = when(until, "until")
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            done = triage.decide(led, fid, accept=accept, reason=reason, until=until_at, actor=who)
        finally:
            led.close()
    f = done["finding"]
    word = "accepted" if accept else "suppressed"
    typer.echo(
        f"finding {fid} ({f['audit']} {f['kind']} {f['principal'] or ''}) {word}"
        f"{' until ' + until_at if until_at else ''}: recorded at position {done['position']}"
    )


@finding_app.command("accept")
def finding_accept(
    ctx: typer.Context,
    finding_id: Annotated[str, typer.Argument(help="The finding's id (F-..., as an audit's finding_id column shows).")],
    reason: ReasonOption = None,
    until: UntilOption = None,
    actor: ActorOption = None,
) -> None:
    """Accept a finding (a known, tolerated risk): it leaves the rows needing attention until --until."""
    _decide(ctx, finding_id, True, reason, until, actor)


@finding_app.command("suppress")
def finding_suppress(
    ctx: typer.Context,
    finding_id: Annotated[
        str | None, typer.Argument(help="The finding's id (F-...); or give --rule and --principal instead.")
    ] = None,
    rule: Annotated[
        str | None,
        typer.Option("--rule", help="Suppress every finding of one kind, AUDIT/KIND (e.g. hygiene/self-grant)..."),
    ] = None,
    principal: Annotated[str | None, typer.Option("--principal", help="...about this principal (with --rule).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="...in this tenant only (with --rule).")] = None,
    reason: ReasonOption = None,
    until: UntilOption = None,
    actor: ActorOption = None,
) -> None:
    """Suppress a finding (not a risk here), or with --rule every finding of a kind about one principal."""
    from access_ledger import triage
    from access_ledger.cli.common import fail

    if rule is None:
        if principal is not None or tenant is not None:
            fail("--principal and --tenant go with --rule")
        if finding_id is None:
            fail("give a finding id, or --rule AUDIT/KIND --principal PRINCIPAL")
        _decide(ctx, finding_id, False, reason, until, actor)
        return
    if finding_id is not None:
        fail("give a finding id or --rule, not both")
    if principal is None:
        fail("--rule needs --principal (the principal whose findings of that kind are suppressed)")
    with handled():
        until_at = when(until, "until")
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            done = triage.add_rule(
                led, rule, principal=principal, tenant=tenant, reason=reason, until=until_at, actor=who
            )
        finally:
            led.close()
    typer.echo(
        f"suppression rule {done['rule']} ({rule} for {principal}{' in tenant ' + tenant if tenant else ''}"
        f"{' until ' + until_at if until_at else ''}): recorded at position {done['position']}"
    )


@finding_app.command("reopen")
def finding_reopen(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="A finding id (F-...) or a suppression rule id (R-...).")],
    reason: ReasonOption = None,
    actor: ActorOption = None,
) -> None:
    """Reopen a finding or a suppression rule: what it took out of the audits needs attention again."""
    from access_ledger import triage

    with handled():
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            done = triage.reopen(led, ref, reason=reason, actor=who)
        finally:
            led.close()
    typer.echo(f"{ref} reopened: recorded at position {done['position']}")


@finding_app.command("list")
def finding_list(
    ctx: typer.Context,
    state: Annotated[State, typer.Option("--state", help="Which findings: open, accepted, suppressed or all.")] = (
        State.open
    ),
    audit: Annotated[str | None, typer.Option("--audit", help="Only this audit's findings.")] = None,
    at: Annotated[str | None, typer.Option("--at", help=f"As they stood then (default now): {CLI_TIME_HELP}.")] = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """The findings of the audits with their state: id, audit, kind, principal, scope, who decided, why, until."""
    from access_ledger import triage

    with handled():
        instant = when(at, "at")
        led = open_ledger(ctx)
        try:
            rows = triage.list_findings(led, state=state.value, audit=audit, at=instant)
        finally:
            led.close()
    columns = LIST_COLUMNS if fmt is Format.table else None
    emit(rows, fmt, out, columns=columns, title=f"Findings ({state.value})")
