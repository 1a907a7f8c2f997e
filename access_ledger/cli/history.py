"""`access-ledger history PRINCIPAL`: everything by or about one principal, time-ordered."""

from __future__ import annotations

from typing import Annotated

import typer

from access_ledger.cli.common import (
    CLI_TIME_HELP,
    Format,
    FormatOption,
    OutOption,
    PeriodOption,
    emit,
    fail,
    handled,
    open_ledger,
    period_or_range,
)


def register(app: typer.Typer) -> None:
    app.command("history")(history)


def history(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="user:NAME, service_account:NAME or team:NAME.")],
    start: Annotated[str | None, typer.Option("--from", help=f"From this instant: {CLI_TIME_HELP}.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Up to this instant, inclusive (default now).")] = None,
    period: PeriodOption = None,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only events of this type (repeat for several), e.g. RoleAssigned."),
    ] = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Every event by or about a principal: its account, grants to it and to its teams while it was a member,
    memberships, secret reads and accesses, tokens, review items about it and their decisions, reviews it did."""
    from access_ledger import api
    from ledger.events import EVENT_TYPES
    from projections.history import COLUMNS
    from projections.history import history as read_history

    with handled():
        for t in types or ():
            if t not in EVENT_TYPES:
                close = __import__("difflib").get_close_matches(t, list(EVENT_TYPES), n=3)
                fail(
                    f"--type: {t!r} is not an event type" + (f" (did you mean {' or '.join(close)}?)" if close else "")
                )
        start, end = period_or_range(period, start, end)
        led = open_ledger(ctx)
        try:
            api.require_recorded(led, principal, None, None)
            rows = read_history(led, principal, start, end, frozenset(types) if types else None)
        finally:
            led.close()
        emit(rows, fmt, out, COLUMNS, title=f"history of {principal}", caption=f"{len(rows):,} events")
