"""Access review campaigns: review start, items, decide, close, status, list."""

from __future__ import annotations

import csv
import uuid
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

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
from ledger.errors import LedgerError, ReviewRefused, ValidationError
from ledger.timeutil import CLI_TIME_HELP

review_app = typer.Typer(
    help="Access review campaigns: start, list items, reassign, decide, close, status.", no_args_is_help=True
)
NameArg = Annotated[str, typer.Argument(help="The campaign's name.")]
MAX_BATCH_BYTES = 64 * 1024 * 1024
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


def _campaign_rows(ctx: typer.Context, name: str, *, context: bool = False) -> tuple[Any, list[dict[str, Any]]]:
    """The campaign and its items as rows, the population re-derived and checked against its start event
    (with `context`: each item's permissions, last use and separation-of-duties conflicts too)."""
    from projections.pit import Timeline
    from projections.reviews import campaign, derive, item_rows
    from reports.sod import load_rules

    led = open_ledger(ctx)
    try:
        c = campaign(led, name)
        timeline = Timeline(led)
        rules = [(rule.id, rule.left, rule.right) for rule in load_rules(None)[0]] if context else []
        return c, item_rows(c, derive(led, c, timeline, context=context, sod_rules=rules), timeline.current())
    finally:
        led.close()


def _item_number(text: str, campaign: str) -> int:
    if not text.strip().isdigit():
        raise ValidationError(f"item {text!r} is not an item of review campaign {campaign!r} (items are numbers)")
    return int(text)


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
    from projections.reviews import start_event

    for pair in reviewer_for or []:
        if not pair.startswith("team:") or "=" not in pair:
            fail(f"--reviewer-for: {pair!r} is not team:NAME=PRINCIPAL")
    with handled():
        at, due = when(at, "at"), when(due, "due")
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            event, items = start_event(
                led,
                name,
                list(tenant),
                reviewer,
                list(reviewer_for or []),
                fallback_reviewer,
                privileged_only,
                due,
                at,
                who,
                reason,
            )
            position = led.append(event)
        finally:
            led.close()
    typer.echo(
        f"recorded at position {position}: campaign {name!r} with {len(items)} items "
        f"(population sha256 {event['population_sha256']})"
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
    with handled():
        _, rows = _campaign_rows(ctx, name, context=True)
        if reviewer is not None:
            rows = [r for r in rows if r["reviewer"] == reviewer]
        if open_:
            rows = [r for r in rows if r["decision"] is None]
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
    from projections.reviews import campaign, derive, reassign_event

    with handled():
        numbers = [_item_number(text, name) for text in item]
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            c = campaign(led, name)
            position = led.append(reassign_event(c, derive(led, c), numbers, to, who, reason))
        finally:
            led.close()
    typer.echo(
        f"recorded at position {position}: {len(numbers)} item{'s' if len(numbers) != 1 else ''} "
        f"of campaign {name!r} to {to}"
    )


def _read_batch(path: Path, name: str) -> tuple[list[tuple[int, int, str, str | None]], str]:
    """(line number, item, decision, reason) of each decided row of a batch file, and the file's SHA-256.

    The file is either rows of item,decision[,reason] (an optional header of those three), or a sheet whose
    header names the columns `item` and `decision` (and maybe `reason`) among others, as `review items
    --format csv` writes it: its other columns are ignored and a row with no decision is left undecided.
    A UTF-8 BOM and CRLF line ends (as spreadsheets save) are accepted; decisions in any case.
    """
    import hashlib
    import io

    if path.stat().st_size > MAX_BATCH_BYTES:
        raise ValidationError(f"{path}: larger than {MAX_BATCH_BYTES} bytes")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not UTF-8 text") from None
    out = []
    columns: dict[str, int] | None = None  # the sheet's columns, once its header is read
    seen_first = False
    for n, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if not seen_first:
            seen_first = True
            header = [c.strip().lower() for c in row]
            if "item" in header:
                wanted = ("item", "decision", "reason")
                for col in wanted:
                    if header.count(col) > 1:
                        raise ValidationError(f"line {n}: the column {col} is given twice")
                if "decision" not in header:
                    raise ValidationError(f"line {n}: a sheet needs the columns item and decision")
                columns = {col: header.index(col) for col in wanted if col in header}
                continue
        if columns is None:
            if len(row) not in (2, 3):
                raise ValidationError(f"line {n}: expected item,decision,reason")
            cells = {"item": row[0], "decision": row[1], "reason": row[2] if len(row) == 3 else ""}
        else:
            cells = {col: (row[i] if i < len(row) else "") for col, i in columns.items()}
            if not cells["decision"].strip():
                continue  # a row of the sheet the reviewer did not decide
        decision = cells["decision"].strip().lower()
        if decision not in ("keep", "revoke"):
            raise ValidationError(f"line {n}: decision {cells['decision'].strip()!r} is not keep or revoke")
        try:
            item = _item_number(cells["item"], name)
        except ValidationError as exc:
            raise ValidationError(f"line {n}: {exc}") from None
        out.append((n, item, decision, cells.get("reason", "").strip() or None))
    return out, hashlib.sha256(data).hexdigest()


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
    from projections.reviews import campaign, decision_event, derive

    if batch is not None and (item is not None or decision is not None):
        fail("give ITEM DECISION or --batch FILE, not both")
    if batch is None and (item is None or decision is None):
        fail("give ITEM and keep|revoke, or --batch FILE")
    with handled():
        if batch is not None:
            wanted, sha256 = _read_batch(batch, name)
            batch_id = uuid.uuid4().hex  # one id for the file's decisions, recorded together
        else:
            wanted = [(0, _item_number(item or "", name), decision.value if decision else "", reason)]
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            c = campaign(led, name)
            population = derive(led, c)
            events = []
            seen: set[int] = set()
            for n, number, what, why in wanted:
                try:
                    if number in seen:
                        raise ValidationError(f"item {number} is given twice")
                    seen.add(number)
                    events.append(decision_event(c, population, number, what, why, who))
                    if batch is not None:
                        events[-1].update(batch=batch_id, batch_sha256=sha256)
                    c.decisions[number] = events[-1]  # the batch's later rows see it (one membership, one outcome)
                except LedgerError as exc:
                    if batch is None:
                        raise
                    raise type(exc)(f"line {n}: {exc}") from None
            if not events:
                raise ValidationError(f"{batch}: no decisions in the file")
            result = led.append_many(events)
        finally:
            led.close()
    typer.echo(
        f"recorded {result.written} decision{'s' if result.written != 1 else ''} "
        f"at positions {result.first}-{result.last}"
        if result.written > 1
        else f"recorded at position {result.last}"
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
    from ledger.timeutil import format_instant, now
    from projections.pit import Timeline
    from projections.reviews import campaign, close_refusal, derive, removals

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
    undecided = "revoke" if revoke_undecided else "keep" if keep_undecided else "exception"
    with handled():
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            c = campaign(led, name)
            if c.close is not None:
                raise ReviewRefused(f"review campaign {name!r} is already closed")
            timeline = Timeline(led)
            current = timeline.current()
            refusal = close_refusal(c, current, who, max(format_instant(now()), led.newest_at() or ""))
            if refusal:
                raise ReviewRefused(refusal)
            open_items = c.start["items"] - len(c.decisions)
            if open_items and not chosen:
                raise ReviewRefused(
                    f"review campaign {name!r} has {open_items} undecided "
                    f"item{'s' if open_items != 1 else ''}: close with --revoke-undecided, "
                    "--keep-undecided or --leave-exceptions"
                )
            population = derive(led, c, timeline)
            close_event: dict[str, Any] = {
                "type": "ReviewClosed",
                "at": None,
                "actor": who,
                "campaign": name,
                "undecided": undecided,
                "auto_revoke": not no_auto_revoke,
            }
            if reason:
                close_event["reason"] = reason
            removed = [] if no_auto_revoke else removals(c, population, undecided, current, who)
            result = led.append_many([close_event, *removed])
        finally:
            led.close()
    typer.echo(f"closed campaign {name!r} at position {result.first}")
    for n, ev in enumerate(removed, 1):
        what = (
            f"unassigned {ev['role']} from {ev['principal']}"
            if ev["type"] == "RoleUnassigned"
            else f"removed {ev['member']} from team {ev['team']}"
        )
        typer.echo(f"  position {result.first + n}: {what} ({ev['reason']})")


def _summary(c: Any, rows: list[dict[str, Any]], now_at: str) -> dict[str, Any]:
    decided = sum(1 for r in rows if r["decision"] is not None)
    overdue = c.close is None and c.start.get("due") is not None and now_at > c.start["due"]
    return {
        "campaign": c.name,
        "status": "closed" if c.close else ("overdue" if overdue else "open"),
        "tenants": ",".join(c.start["tenants"]),
        "started_at": c.start["at"],
        "as_of_position": c.start["as_of_position"],
        "due": c.start.get("due"),
        "items": len(rows),
        "decided": decided,
        "kept": sum(1 for r in rows if r["decision"] == "keep"),
        "revoked": sum(1 for r in rows if r["decision"] == "revoke"),
        "exceptions": sum(1 for r in rows if r["outcome"] == "exception"),
        "revocations_open": sum(1 for r in rows if r["outcome"] == "revoke" and not r["removed"]),
        "closed_at": c.close["at"] if c.close else None,
        "population_sha256": c.start["population_sha256"],
    }


@review_app.command("status")
def status(ctx: typer.Context, name: NameArg, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Progress per reviewer: items, decided, open, overdue, exceptions and revocations not carried out."""
    from ledger.timeutil import format_instant, now

    with handled():
        c, rows = _campaign_rows(ctx, name)
        now_at = format_instant(now())
        overdue = c.close is None and c.start.get("due") is not None and now_at > c.start["due"]
        per: dict[str, dict[str, Any]] = {}
        for r in rows:
            p = per.setdefault(
                r["reviewer"],
                {
                    "reviewer": r["reviewer"],
                    "items": 0,
                    "decided": 0,
                    "open": 0,
                    "kept": 0,
                    "revoked": 0,
                    "overdue": 0,
                    "exceptions": 0,
                    "revocations_open": 0,
                },
            )
            p["items"] += 1
            if r["decision"] is None:
                p["open"] += 1
                p["overdue"] += int(overdue)
            else:
                p["decided"] += 1
                p["kept" if r["decision"] == "keep" else "revoked"] += 1
            p["exceptions"] += int(r["outcome"] == "exception")
            p["revocations_open"] += int(r["outcome"] == "revoke" and not r["removed"])
        s = _summary(c, rows, now_at)
        caption = (
            f"{s['status']}: {s['decided']} of {s['items']} decided, {s['exceptions']} exceptions, "
            f"{s['revocations_open']} revocations not carried out"
        )
        emit(sorted(per.values(), key=lambda p: p["reviewer"]), fmt, out, title=f"review {name}", caption=caption)


@review_app.command("list")
def list_(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Every campaign: scope, status, progress."""
    from ledger.timeutil import format_instant, now
    from projections.pit import Timeline
    from projections.reviews import campaigns, derive, item_rows

    with handled():
        led = open_ledger(ctx)
        try:
            timeline = Timeline(led)
            current = timeline.current()
            now_at = format_instant(now())
            rows = [
                _summary(c, item_rows(c, derive(led, c, timeline), current), now_at) for c in campaigns(led).values()
            ]
        finally:
            led.close()
        emit(rows, fmt, out, title="review campaigns")
