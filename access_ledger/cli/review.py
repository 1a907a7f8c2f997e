"""Access review campaigns: review start, items, decide, close, status, list."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from access_ledger.cli.common import (
    ActorOption,
    AtOption,
    Format,
    FormatOption,
    OutOption,
    ReasonOption,
    check_actor,
    default_actor,
    emit,
    fail,
    handled,
    open_ledger,
    when,
)
from ledger.errors import ValidationError
from ledger.timeutil import CLI_TIME_HELP

review_app = typer.Typer(
    help="Access review campaigns: start, list items, reassign, decide, close, status.", no_args_is_help=True
)
NameArg = Annotated[str, typer.Argument(help="The campaign's name.")]
#: The columns `review items` shows as a table (json and csv give every column).
TABLE_COLUMNS = (
    "item",
    "principal",
    "role",
    "tenant",
    "resource",
    "via",
    "privileged",
    "deactivated",
    "last_used",
    "sod_conflicts",
    "reviewer",
    "decision",
    "outcome",
)


class Decision(str, Enum):
    keep = "keep"
    revoke = "revoke"


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")


@review_app.command("start")
def start(
    ctx: typer.Context,
    name: NameArg,
    tenant: Annotated[list[str], typer.Option("--tenant", help="A tenant in scope (repeat for more).")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who reviews the items (user:NAME).")],
    reviewer_for: Annotated[
        list[str] | None,
        typer.Option("--reviewer-for", help="team:NAME=user:NAME: who reviews that team's members (repeatable)."),
    ] = None,
    fallback_reviewer: Annotated[
        str | None,
        typer.Option(
            "--fallback-reviewer", help="Who reviews items the assigned reviewer may not (own access or grant)."
        ),
    ] = None,
    privileged_only: Annotated[bool, typer.Option("--privileged-only", help="Only privileged assignments.")] = False,
    due: Annotated[str | None, typer.Option("--due", help=f"When the review is due: {CLI_TIME_HELP}.")] = None,
    at: AtOption = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
) -> None:
    """Start a campaign: fix its population (every assignment in force in the tenants) and record it."""
    from access_ledger.api import review_start

    for pair in reviewer_for or []:
        if not pair.startswith("team:") or "=" not in pair:
            fail(f"--reviewer-for: {pair!r} is not team:NAME=PRINCIPAL")
    with handled():
        at, due = when(at, "at"), when(due, "due")
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            started = review_start(
                led,
                name,
                list(tenant),
                reviewer,
                list(reviewer_for or []),
                fallback_reviewer,
                privileged_only,
                due,
                at,
                actor=who,
                reason=reason,
            )
        finally:
            led.close()
    typer.echo(
        f"recorded at position {started['position']}: campaign {name!r} with {started['items']} items "
        f"(population sha256 {started['population_sha256']})"
    )


@review_app.command("items")
def items(
    ctx: typer.Context,
    name: NameArg,
    reviewer: Annotated[str | None, typer.Option("--reviewer", help="Only this reviewer's items.")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Only items not decided yet.")] = False,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """The campaign's items with their context at the start (permissions, last use, separation-of-duties
    conflicts), reviewer, decision and remediation; a table shows a brief set of the columns."""
    from access_ledger.api import review_items

    with handled():
        led = open_ledger(ctx)
        try:
            rows = review_items(led, name, reviewer=reviewer, open_only=open_)["rows"]
        finally:
            led.close()
        brief = fmt in (Format.table, Format.markdown)
        emit(rows, fmt, out, columns=TABLE_COLUMNS if brief else None, title=f"review {name}")


@review_app.command("reassign")
def reassign(
    ctx: typer.Context,
    name: NameArg,
    item: Annotated[list[str], typer.Argument(help="The items' numbers (see `review items`).")],
    to: Annotated[str, typer.Option("--to", help="The new reviewer (user:NAME or service_account:NAME).")],
    actor: ActorOption = None,
    reason: ReasonOption = None,
) -> None:
    """Give undecided items to another reviewer (the campaign's owner only)."""
    from access_ledger.api import item_number, review_reassign

    with handled():
        numbers = [item_number(text, name) for text in item]
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            position = review_reassign(led, name, numbers, to, actor=who, reason=reason)["position"]
        finally:
            led.close()
    typer.echo(
        f"recorded at position {position}: {len(numbers)} item{'s' if len(numbers) != 1 else ''} "
        f"of campaign {name!r} to {to}"
    )


@review_app.command("decide")
def decide(
    ctx: typer.Context,
    name: NameArg,
    item: Annotated[str | None, typer.Argument(help="The item's number (see `review items`).")] = None,
    decision: Annotated[Decision | None, typer.Argument(help="keep or revoke.")] = None,
    batch: Annotated[
        Path | None, typer.Option("--batch", help="CSV of item,decision,reason: all recorded, or none.")
    ] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
) -> None:
    """Record a reviewer's decision on an item (or a CSV of them, all or nothing)."""
    import hashlib

    from access_ledger.api import REVIEW_BATCH_BYTES, item_number, parse_review_batch, review_decide

    if batch is not None and (item is not None or decision is not None):
        fail("give ITEM DECISION or --batch FILE, not both")
    if batch is None and (item is None or decision is None):
        fail("give ITEM and keep|revoke, or --batch FILE")
    with handled():
        sha256 = None
        if batch is not None:
            if batch.stat().st_size > REVIEW_BATCH_BYTES:
                raise ValidationError(f"{batch}: larger than {REVIEW_BATCH_BYTES} bytes")
            data = batch.read_bytes()
            wanted = parse_review_batch(data, name, str(batch))
            sha256 = hashlib.sha256(data).hexdigest()
        else:
            wanted = [(0, item_number(item or "", name), decision.value if decision else "", reason)]
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            result = review_decide(led, name, wanted, actor=who, batch_sha256=sha256, source=str(batch))
        finally:
            led.close()
    typer.echo(
        f"recorded {result['written']} decision{'s' if result['written'] != 1 else ''} "
        f"at positions {result['first']}-{result['last']}"
        if result["written"] > 1
        else f"recorded at position {result['last']}"
    )


@review_app.command("close")
def close(
    ctx: typer.Context,
    name: NameArg,
    revoke_undecided: Annotated[bool, typer.Option("--revoke-undecided", help="Undecided items are revoked.")] = False,
    keep_undecided: Annotated[bool, typer.Option("--keep-undecided", help="Undecided items are kept.")] = False,
    leave_exceptions: Annotated[
        bool, typer.Option("--leave-exceptions", help="Undecided items stay as exceptions (kept, and reported).")
    ] = False,
    no_auto_revoke: Annotated[
        bool,
        typer.Option(
            "--no-auto-revoke", help="Record no removals: each revoke stays open until its removal is recorded."
        ),
    ] = False,
    actor: ActorOption = None,
    reason: ReasonOption = None,
) -> None:
    """Close the campaign (its owner, or a holder of member:update in the organization); with items undecided,
    say what they come to. Its revocations are recorded in the same transaction (unless --no-auto-revoke)."""
    from access_ledger.api import review_close

    chosen = [
        flag
        for flag, on in (
            ("--revoke-undecided", revoke_undecided),
            ("--keep-undecided", keep_undecided),
            ("--leave-exceptions", leave_exceptions),
        )
        if on
    ]
    if len(chosen) > 1:
        fail(f"give one of --revoke-undecided, --keep-undecided, --leave-exceptions, not {' and '.join(chosen)}")
    undecided = "revoke" if revoke_undecided else "keep" if keep_undecided else "exception" if chosen else None
    with handled():
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            closed = review_close(led, name, undecided, auto_revoke=not no_auto_revoke, actor=who, reason=reason)
        finally:
            led.close()
    typer.echo(f"closed campaign {name!r} at position {closed['position']}")
    for removal in closed["removed"]:
        ev = removal["event"]
        what = (
            f"unassigned {ev['role']} from {ev['principal']}"
            if ev["type"] == "RoleUnassigned"
            else f"removed {ev['member']} from team {ev['team']}"
        )
        typer.echo(f"  position {removal['position']}: {what} ({ev['reason']})")


@review_app.command("status")
def status(ctx: typer.Context, name: NameArg, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Progress per reviewer: items, decided, open, overdue, exceptions and revocations not carried out."""
    from access_ledger.api import review_status

    with handled():
        led = open_ledger(ctx)
        try:
            answer = review_status(led, name)
        finally:
            led.close()
        s = answer["summary"]
        caption = (
            f"{s['status']}: {s['decided']} of {s['items']} decided, {s['exceptions']} exceptions, "
            f"{s['revocations_open']} revocations not carried out"
        )
        emit(answer["rows"], fmt, out, title=f"review {name}", caption=caption)


@review_app.command("list")
def list_(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Every campaign: scope, status, progress."""
    from access_ledger.api import review_list

    with handled():
        led = open_ledger(ctx)
        try:
            rows = review_list(led)["rows"]
        finally:
            led.close()
        emit(rows, fmt, out, title="review campaigns")
