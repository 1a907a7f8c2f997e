"""Query commands: check (and check --batch), who-can, what-can, explain, diff."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from access_ledger.cli.common import Format, FormatOption, OutOption, emit, emit_text, fail, handled, open_ledger
from ledger.timeutil import CLI_TIME_HELP, CLI_TIME_HELP_AGAIN

if TYPE_CHECKING:
    from ledger.app import AccessLedger

T = TypeVar("T")
AtQ = Annotated[str | None, typer.Option("--at", help=f"Answer as of this instant (default now): {CLI_TIME_HELP}.")]
PositionQ = Annotated[int | None, typer.Option("--position", help="Answer as of this log position.")]
TenantQ = Annotated[str | None, typer.Option("--tenant", help="The tenant (omit for organization resources).")]


def register(app: typer.Typer) -> None:
    app.command("check")(check)
    app.command("who-can")(who_can)
    app.command("what-can")(what_can)
    app.command("explain")(explain)
    app.command("diff")(diff)


def _answer(ctx: typer.Context, ask: Callable[[AccessLedger], T]) -> T:
    """Open the ledger, ask one call of access_ledger.api, close the ledger."""
    led = open_ledger(ctx)
    try:
        return ask(led)
    finally:
        led.close()


def check(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Argument(help="user:NAME, team:NAME or service_account:NAME.")] = None,
    action: Annotated[str | None, typer.Argument(help="e.g. read, update, read_secret_value.")] = None,
    resource: Annotated[str | None, typer.Argument(help="TYPE/ID, e.g. service_connector/aws-prod.")] = None,
    tenant: TenantQ = None,
    at: AtQ = None,
    position: PositionQ = None,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            help="JSONL of questions: {principal, action, resource, tenant?, at? | position?}; one JSON answer a line.",
        ),
    ] = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """May PRINCIPAL do ACTION on RESOURCE? Exit 0 allowed, 1 denied (batch: 1 if any denied)."""
    if batch is not None:
        if principal or action or resource:
            fail("give questions either as arguments or with --batch, not both")
        _check_batch(ctx, batch, out)
        return
    if not (principal and action and resource):
        fail("check needs PRINCIPAL ACTION RESOURCE (or --batch FILE)")
    from access_ledger import api

    with handled():
        answer = _answer(ctx, lambda led: api.check(led, principal, action, resource, tenant, at, position))
    if fmt is Format.json:
        emit_text(json.dumps(answer, indent=2) + "\n", out)
    elif fmt is Format.table and out is None:
        typer.echo(_verdict(answer))
    else:
        row = {
            k: answer[k] for k in ("principal", "action", "resource", "tenant", "at", "position", "allowed", "why_not")
        }
        row["roles"] = sorted({p["role"] for p in answer["paths"]})
        emit([row], fmt, out)
    if not answer["allowed"]:
        raise typer.Exit(1)


def _verdict(answer: dict[str, Any]) -> str:
    """One line: allowed (through which roles) or denied (and why not)."""
    where = f" in tenant {answer['tenant']}" if answer["tenant"] else ""
    asked = f"{answer['action']} {answer['resource']}{where} at {answer['at']}"
    if answer["allowed"]:
        roles = ", ".join(
            sorted({p["role"] + (f" via team:{p['via_team']}" if p["via_team"] else "") for p in answer["paths"]})
        )
        return f"allowed: {answer['principal']} may {asked} (role {roles})"
    return f"denied: {answer['principal']} may not {asked}: {answer['why_not']}"


def _check_batch(ctx: typer.Context, batch: Path, out: Path | None) -> None:
    from access_ledger import api

    if str(batch) != "-" and not batch.is_file():
        fail(f"no file {batch}")
    with handled():
        data = sys.stdin.buffer.read() if str(batch) == "-" else batch.read_bytes()
        queries = api.parse_questions(data)
        answers = _answer(ctx, lambda led: api.check_batch(led, queries))
    lines = [json.dumps({k: v for k, v in a.items() if not k.startswith("_")}) for a in answers]
    emit_text("".join(line + "\n" for line in lines), out)
    if not all(a["allowed"] for a in answers):
        raise typer.Exit(1)


def who_can(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="The action.")],
    resource: Annotated[str, typer.Argument(help="TYPE/ID.")],
    tenant: TenantQ = None,
    at: AtQ = None,
    position: PositionQ = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Every user and service account (teams expanded) allowed ACTION on RESOURCE: one row per path (role, via
    team, resource scope), each with the grant behind it."""
    from access_ledger import api

    with handled():
        got = _answer(ctx, lambda led: api.who_can(led, action, resource, tenant, at, position))
        instant, rows = got["at"], got["rows"]
        emit(
            rows,
            fmt,
            out,
            api.WHO_CAN_COLUMNS,
            title=f"who can {action} {resource}{' in ' + tenant if tenant else ''} at {instant}",
        )


def what_can(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="user:NAME, team:NAME or service_account:NAME.")],
    tenant: TenantQ = None,
    at: AtQ = None,
    position: PositionQ = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Every permission PRINCIPAL holds (per tenant and in the organization), and through what."""
    from access_ledger import api

    with handled():
        got = _answer(ctx, lambda led: api.what_can(led, principal, tenant, at, position))
        instant, rows = got["at"], got["rows"]
        emit(rows, fmt, out, api.WHAT_CAN_COLUMNS, title=f"what {principal} can do at {instant}")


def explain(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="user:NAME, team:NAME or service_account:NAME.")],
    action: Annotated[str, typer.Argument(help="The action.")],
    resource: Annotated[str, typer.Argument(help="TYPE/ID.")],
    tenant: TenantQ = None,
    at: AtQ = None,
    position: PositionQ = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Every path principal -> team -> role -> base role -> permission, each link with its event.
    Exit 0 allowed, 1 denied (saying why not, as check does)."""
    from access_ledger import api

    with handled():
        answer = _answer(ctx, lambda led: api.check(led, principal, action, resource, tenant, at, position))
        instant = answer["at"]
        if fmt is Format.json:
            emit_text(json.dumps(answer, indent=2) + "\n", out)
        elif fmt is Format.table and out is None and not answer["allowed"]:
            typer.echo(_verdict(answer))  # no path to show: why not, as check says it
        else:
            rows = [
                {
                    "path": i,
                    "link": link["link"],
                    "event": link["event"],
                    "position": link["position"] or None,
                    "at": link["at"] or None,
                    "actor": link["actor"],
                    "reason": link["reason"],
                }
                for i, path in enumerate(answer["paths"], 1)
                for link in path["links"]
            ]
            verdict = "allowed" if answer["allowed"] else f"denied ({answer['why_not']})"
            emit(
                rows,
                fmt,
                out,
                ["path", "link", "event", "position", "at", "actor", "reason"],
                title=f"{principal} {action} {resource}{' in ' + tenant if tenant else ''} at {instant}: {verdict}",
            )
    if not answer["allowed"]:
        raise typer.Exit(1)


def diff(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", help=f"The earlier instant: {CLI_TIME_HELP}.")],
    to: Annotated[
        str | None, typer.Option("--to", help=f"The later instant (default now; {CLI_TIME_HELP_AGAIN}).")
    ] = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Permissions gained and lost per principal between two instants, with the events behind each."""
    from access_ledger import api

    with handled():
        led = open_ledger(ctx)
        try:
            answer = api.diff(led, from_, to)
        finally:
            led.close()
        rows, t1, t2 = answer["rows"], answer["from"], answer["to"]
        if fmt is Format.json:
            emit_text(json.dumps(rows, indent=2) + "\n", out)
            return
        emit(
            api.diff_table(rows),
            fmt,
            out,
            api.DIFF_COLUMNS,
            title=f"changes of effective permissions from {t1} to {t2}",
        )
