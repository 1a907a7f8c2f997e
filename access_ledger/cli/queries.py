"""Query commands: check (and check --batch), who-can, what-can, explain, diff."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from access_ledger.cli.common import Format, FormatOption, OutOption, emit, emit_text, fail, handled, open_ledger, when
from ledger.timeutil import CLI_TIME_HELP, CLI_TIME_HELP_AGAIN

if TYPE_CHECKING:
    from ledger.app import AccessLedger
    from projections.permissions import PermissionState

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


def _state(led: AccessLedger, at: str | None, position: int | None,
           principal: str | None = None) -> tuple[PermissionState, str]:
    """The state and the instant a question is asked at (only `principal`'s part, when given)."""
    from ledger.timeutil import format_instant, now
    from projections.pit import Timeline

    if at is not None and position is not None:
        fail("give --at or --position, not both")
    timeline = Timeline(led)
    if position is not None:
        if position < 0 or position > led.head():
            fail(f"position: {position} is outside the log (1-{led.head()})")
        state = timeline.for_principal(principal, position) if principal else timeline.at_position(position)
        return state, state.at or format_instant(now())
    if at is not None:
        instant = when(at, "at")
        target = led.position_at(instant)
        return (timeline.for_principal(principal, target) if principal else timeline.at_position(target)), instant
    return timeline.current(), format_instant(now())


def _answer(ctx: typer.Context, at: str | None, position: int | None, principal: str | None,
            ask: Callable[[PermissionState, str], T], tenant: str | None = None, resource: str | None = None) -> T:
    """Open the ledger, take the state the question is asked of, answer it, close the ledger.

    A principal, tenant or service connector the ledger never recorded is refused (a typo), not
    answered "nobody".
    """
    led = open_ledger(ctx)
    try:
        _require_recorded(led, principal, tenant, resource)
        state, instant = _state(led, at, position, principal)
        return ask(state, instant)
    finally:
        led.close()


def check(
    ctx: typer.Context,
    principal: Annotated[str | None, typer.Argument(help="user:NAME, team:NAME or service_account:NAME.")] = None,
    action: Annotated[str | None, typer.Argument(help="e.g. read, update, read_secret_value.")] = None,
    resource: Annotated[str | None, typer.Argument(help="TYPE/ID, e.g. service_connector/aws-prod.")] = None,
    tenant: TenantQ = None, at: AtQ = None, position: PositionQ = None,
    batch: Annotated[Path | None, typer.Option("--batch", help="JSONL of questions: {principal, action, resource, "
                                                               "tenant?, at? | position?}; one JSON answer a line.")]
    = None,
    fmt: FormatOption = Format.table, out: OutOption = None,
) -> None:
    """May PRINCIPAL do ACTION on RESOURCE? Exit 0 allowed, 1 denied (batch: 1 if any denied)."""
    if batch is not None:
        if principal or action or resource:
            fail("give questions either as arguments or with --batch, not both")
        _check_batch(ctx, batch, out)
        return
    if not (principal and action and resource):
        fail("check needs PRINCIPAL ACTION RESOURCE (or --batch FILE)")
    from projections.answers import Question, check as ask

    with handled():
        answer = _answer(ctx, at, position, principal,
                         lambda state, instant: ask(state, Question(principal, action, resource, tenant), instant),
                         tenant, resource)
    if fmt is Format.json:
        emit_text(json.dumps(answer, indent=2) + "\n", out)
    elif fmt is Format.table and out is None:
        typer.echo(_verdict(answer))
    else:
        row = {k: answer[k] for k in ("principal", "action", "resource", "tenant", "at", "position", "allowed",
                                       "why_not")}
        row["roles"] = sorted({p["role"] for p in answer["paths"]})
        emit([row], fmt, out)
    if not answer["allowed"]:
        raise typer.Exit(1)


def _require_recorded(led: AccessLedger, principal: str | None, tenant: str | None, resource: str | None) -> None:
    """Refuse a principal, a tenant, or a connector (`service_connector/ID` in a tenant) never recorded."""
    from ledger.names import require_recorded

    rtype, _, rid = (resource or "").partition("/")
    connector = rid if rtype == "service_connector" and tenant is not None else None
    require_recorded(led.store, principal=principal, tenant=tenant, connector=connector)


def _verdict(answer: dict[str, Any]) -> str:
    """One line: allowed (through which roles) or denied (and why not)."""
    where = f" in tenant {answer['tenant']}" if answer["tenant"] else ""
    asked = f"{answer['action']} {answer['resource']}{where} at {answer['at']}"
    if answer["allowed"]:
        roles = ", ".join(sorted({p["role"] + (f" via team:{p['via_team']}" if p["via_team"] else "")
                                  for p in answer["paths"]}))
        return f"allowed: {answer['principal']} may {asked} (role {roles})"
    return f"denied: {answer['principal']} may not {asked}: {answer['why_not']}"


def _check_batch(ctx: typer.Context, batch: Path, out: Path | None) -> None:
    from ledger.errors import ValidationError
    from ledger.events import load_json
    from ledger.timeutil import canonical, format_instant, now
    from projections.answers import Question, check as ask
    from projections.pit import Timeline

    if str(batch) != "-" and not batch.is_file():
        fail(f"no file {batch}")
    with handled():
        data = sys.stdin.buffer.read() if str(batch) == "-" else batch.read_bytes()
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line_no = data.count(b"\n", 0, exc.start) + 1
            raise ValidationError(f"line {line_no}: line is not valid UTF-8") from None
        queries: list[dict[str, Any]] = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                # A key given twice is refused (json.loads would keep the last one), and so is
                # nesting too deep for the parser.
                q = load_json(line)
            except ValidationError as exc:
                raise type(exc)(f"line {n}: {exc}") from None
            if not isinstance(q, dict):
                raise ValidationError(f"line {n}: line is not a JSON object")
            unknown = set(q) - {"principal", "action", "resource", "tenant", "at", "position"}
            if unknown:
                raise ValidationError(f"line {n}: {sorted(unknown)[0]}: unknown field")
            for key in ("principal", "action", "resource"):
                if not isinstance(q.get(key), str):
                    raise ValidationError(f"line {n}: {key}: required text field is missing")
            if q.get("tenant") is not None and not isinstance(q["tenant"], str):
                raise ValidationError(f"line {n}: tenant: must be a text (a tenant's name)")
            if "at" in q and "position" in q:
                raise ValidationError(f"line {n}: give at or position, not both")
            if "at" in q:
                try:
                    q["_instant"] = canonical(q["at"])
                except ValidationError as exc:
                    raise ValidationError(f"line {n}: {exc}") from None
            if "position" in q and (type(q["position"]) is not int or q["position"] < 0):  # true is no position
                raise ValidationError(f"line {n}: position: must be a whole number >= 0")
            q["_line"] = n
            queries.append(q)
        led = open_ledger(ctx)
        try:
            _require_recorded_names(led, queries)
            head = led.head()
            for q in queries:
                if "_instant" in q:
                    q["_position"] = led.position_at(q["_instant"])
                elif "position" in q:
                    q["_position"] = min(q["position"], head)
                    q["_instant"] = led.time_of(q["_position"]) or format_instant(now())
                else:
                    q["_position"], q["_instant"] = head, format_instant(now())

            def answer(state: PermissionState, q: dict[str, Any]) -> bool:
                try:
                    result = ask(state, Question(q["principal"], q["action"], q["resource"], q.get("tenant")),
                                 q["_instant"])
                except ValidationError as exc:
                    raise ValidationError(f"line {q['_line']}: {exc}") from None
                return bool(result["allowed"])

            results = Timeline(led).sweep(queries, lambda q: q["_position"], answer)
        finally:
            led.close()
    lines = []
    for q, allowed in zip(queries, results):
        shown = {k: v for k, v in q.items() if not k.startswith("_")}
        lines.append(json.dumps({**shown, "allowed": allowed}))
    emit_text("".join(line + "\n" for line in lines), out)
    if not all(results):
        raise typer.Exit(1)


def _require_recorded_names(led: AccessLedger, queries: list[dict[str, Any]]) -> None:
    """Refuse a batch naming a principal, tenant or connector never recorded (each looked up once)."""
    from ledger.errors import LedgerError

    seen: set[tuple[str | None, ...]] = set()
    for q in queries:
        connector = q["resource"] if q["resource"].startswith("service_connector/") else None
        for names in ((q["principal"], None, None), (None, q.get("tenant"), connector)):
            if names in seen:
                continue
            seen.add(names)
            try:
                _require_recorded(led, *names)
            except LedgerError as exc:
                raise type(exc)(f"line {q['_line']}: {exc}") from None


def who_can(ctx: typer.Context, action: Annotated[str, typer.Argument(help="The action.")],
            resource: Annotated[str, typer.Argument(help="TYPE/ID.")],
            tenant: TenantQ = None, at: AtQ = None, position: PositionQ = None,
            fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Every user and service account (teams expanded) allowed ACTION on RESOURCE: one row per path (role, via
    team, resource scope), each with the grant behind it."""
    from projections.answers import who_can as ask

    with handled():
        instant, rows = _answer(ctx, at, position, None,
                                lambda state, instant: (instant, ask(state, action, resource, tenant, instant)),
                                tenant, resource)
        emit(rows, fmt, out, ["principal", "role", "via_team", "permission", "resource_scope", "expires_at",
                              "granted_at", "granted_by", "position", "reason"],
             title=f"who can {action} {resource}{' in ' + tenant if tenant else ''} at {instant}")


def what_can(ctx: typer.Context, principal: Annotated[str, typer.Argument(help="user:NAME, team:NAME or "
                                                                              "service_account:NAME.")],
             tenant: TenantQ = None, at: AtQ = None, position: PositionQ = None,
             fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Every permission PRINCIPAL holds (per tenant and in the organization), and through what."""
    from projections.answers import what_can as ask

    with handled():
        instant, rows = _answer(ctx, at, position, principal,
                                lambda state, instant: (instant, ask(state, principal, tenant, instant)), tenant)
        emit(rows, fmt, out, ["tenant", "permission", "resource_scope", "role", "via_team", "from_role",
                              "expires_at", "granted_at", "granted_by", "position", "reason"],
             title=f"what {principal} can do at {instant}")


def explain(ctx: typer.Context,
            principal: Annotated[str, typer.Argument(help="user:NAME, team:NAME or service_account:NAME.")],
            action: Annotated[str, typer.Argument(help="The action.")],
            resource: Annotated[str, typer.Argument(help="TYPE/ID.")],
            tenant: TenantQ = None, at: AtQ = None, position: PositionQ = None,
            fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Every path principal -> team -> role -> base role -> permission, each link with its event.
    Exit 0 allowed, 1 denied (saying why not, as check does)."""
    from projections.answers import Question, check as ask

    with handled():
        answer = _answer(ctx, at, position, principal,
                         lambda state, instant: ask(state, Question(principal, action, resource, tenant), instant),
                         tenant, resource)
        instant = answer["at"]
        if fmt is Format.json:
            emit_text(json.dumps(answer, indent=2) + "\n", out)
        elif fmt is Format.table and out is None and not answer["allowed"]:
            typer.echo(_verdict(answer))  # no path to show: why not, as check says it
        else:
            rows = [{"path": i, "link": link["link"], "event": link["event"], "position": link["position"] or None,
                     "at": link["at"] or None, "actor": link["actor"], "reason": link["reason"]}
                    for i, path in enumerate(answer["paths"], 1) for link in path["links"]]
            verdict = "allowed" if answer["allowed"] else f"denied ({answer['why_not']})"
            emit(rows, fmt, out, ["path", "link", "event", "position", "at", "actor", "reason"],
                 title=f"{principal} {action} {resource}{' in ' + tenant if tenant else ''} at {instant}: {verdict}")
    if not answer["allowed"]:
        raise typer.Exit(1)


def diff(ctx: typer.Context,
         from_: Annotated[str, typer.Option("--from", help=f"The earlier instant: {CLI_TIME_HELP}.")],
         to: Annotated[str | None, typer.Option("--to", help=f"The later instant (default now; "
                                                             f"{CLI_TIME_HELP_AGAIN}).")] = None,
         fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Permissions gained and lost per principal between two instants, with the events behind each."""
    from ledger.timeutil import format_instant, now
    from projections.answers import diff as compare
    from projections.pit import Timeline

    with handled():
        t1, t2 = when(from_, "from"), when(to, "to") or format_instant(now())
        if t2 < t1:
            fail("to: must not be before --from")
        led = open_ledger(ctx)
        try:
            timeline = Timeline(led)
            p1, p2 = led.position_at(t1), led.position_at(t2)
            before = timeline.at_position(p1)
            after = timeline.at_position(p2)
            events = list(led.read_changes(p1 + 1, p2)) if p2 > p1 else []
            rows = compare(before, after, t1, t2, events)
        finally:
            led.close()
        if fmt is Format.json:
            emit_text(json.dumps(rows, indent=2) + "\n", out)
            return
        flat = [{**{k: r[k] for k in ("principal", "change", "tenant", "permission", "resource_scope")},
                 "events": "; ".join(f"#{c['position'] or '-'} {c['event']} {c['at']} by {c['actor']}"
                                     + (f" ({c['reason']})" if c["reason"] else "") for c in r["causes"])}
                for r in rows]
        emit(flat, fmt, out, ["principal", "change", "tenant", "permission", "resource_scope", "events"],
             title=f"changes of effective permissions from {t1} to {t2}")
