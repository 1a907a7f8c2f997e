"""Change commands (init, tenant, user, team, service-account, role, connector, access), import,
export, verify and digest."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
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
    emit_text,
    fail,
    handled,
    no_new_file_if_refused,
    open_ledger,
    when,
)
from ledger.errors import IntegrityFailure, StorageError, ValidationError
from ledger.private import open_private
from ledger.timeutil import CLI_TIME_HELP, CLI_TIME_HELP_AGAIN

tenant_app = typer.Typer(help="Create, rename and delete tenants.", no_args_is_help=True)
user_app = typer.Typer(help="Create, deactivate and reactivate users.", no_args_is_help=True)
team_app = typer.Typer(help="Create and delete teams; add and remove members.", no_args_is_help=True)
sa_app = typer.Typer(help="Create, deactivate and reactivate service accounts.", no_args_is_help=True)
role_app = typer.Typer(help="Create, change, delete, list, show, assign and unassign roles.", no_args_is_help=True)
connector_app = typer.Typer(
    help="Register, list and delete service connectors; record secret accesses.", no_args_is_help=True
)
access_app = typer.Typer(help="Record resource accesses reported by the platform.", no_args_is_help=True)

Principal = Annotated[str, typer.Argument(help="user:NAME, team:NAME or service_account:NAME.")]


def _change(
    ctx: typer.Context,
    method: str,
    *args: Any,
    actor: str | None,
    reason: str | None,
    at: str | None,
    create: bool = False,
    **kwargs: Any,
) -> None:
    """Run one change command and print the recorded position."""
    with no_new_file_if_refused(ctx) if create else nullcontext(), handled():
        at = when(at, "at")
        led = open_ledger(ctx, create=create)
        try:
            who = default_actor(actor)
            if method != "init":  # the first event: nobody is recorded yet, any well-formed actor
                check_actor(led, who)
            position = getattr(led, method)(*args, actor=who, reason=reason, at=at, **kwargs)
        finally:
            led.close()
    typer.echo(f"recorded at position {position}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(user_app, name="user")
    app.add_typer(team_app, name="team")
    app.add_typer(sa_app, name="service-account")
    app.add_typer(role_app, name="role")
    app.add_typer(connector_app, name="connector")
    app.add_typer(access_app, name="access")
    app.command("import")(import_)
    app.command("export")(export)
    app.command("verify")(verify)
    app.command("digest")(digest)


def init(
    ctx: typer.Context,
    org: Annotated[str, typer.Option("--org", help="The organization's name.")] = "default",
    preset: Annotated[str, typer.Option("--preset", help="zenml-pro, zenml-oss or zenml-oss-098.")] = "zenml-pro",
    enforce_authority: Annotated[
        bool,
        typer.Option(
            "--enforce-authority",
            help="Refuse every change whose actor lacks the permission the preset's "
            "authority rules ask for (recorded in the chain, for the ledger's whole life).",
        ),
    ] = False,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Create the ledger with its organization and the preset's predefined roles."""
    _change(
        ctx, "init", org, preset, actor=actor, reason=reason, at=at, create=True, enforce_authority=enforce_authority
    )


# -- tenants, users, service accounts, teams ------------------------------------------------


@tenant_app.command("create")
def tenant_create(
    ctx: typer.Context,
    tenant: str,
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Create a tenant."""
    _change(ctx, "create_tenant", tenant, display_name, actor=actor, reason=reason, at=at)


@tenant_app.command("rename")
def tenant_rename(
    ctx: typer.Context,
    tenant: str,
    display_name: str,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Give a tenant a new display name."""
    _change(ctx, "rename_tenant", tenant, display_name, actor=actor, reason=reason, at=at)


@tenant_app.command("delete")
def tenant_delete(
    ctx: typer.Context, tenant: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Delete a tenant: from now on it grants nothing and nothing may target it."""
    _change(ctx, "delete_tenant", tenant, actor=actor, reason=reason, at=at)


@tenant_app.command("list")
def tenant_list(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """List tenants with their status."""
    _list(ctx, "tenant", ["name", "status", "display_name"], fmt, out)


def _one_word(name: str, what: str) -> None:
    """Refuse a new user or service account name holding white space: `user:NAME` must stay one word to
    type, and to read in every table and log line. (Imported histories keep the names they record.)"""
    from ledger.vocabulary import check_name

    check_name(name, what.replace(" ", "_"))  # what every writer refuses first, with its own message
    if any(ch.isspace() for ch in name):
        raise ValidationError(
            f"{what}: {name!r} holds white space: a principal's name is one word, e.g. {'.'.join(name.split())!r}"
        )


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    user: str,
    email: Annotated[str | None, typer.Option("--email")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Create a user."""
    with handled():
        _one_word(user, "user")
        if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            raise ValidationError(f"email: {email!r} is not an email address (NAME@DOMAIN)")
    _change(ctx, "create_user", user, email, actor=actor, reason=reason, at=at)


@user_app.command("deactivate")
def user_deactivate(
    ctx: typer.Context, user: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Deactivate a user: no effective permission until reactivated; assignments stay."""
    _change(ctx, "deactivate_user", user, actor=actor, reason=reason, at=at)


@user_app.command("reactivate")
def user_reactivate(
    ctx: typer.Context, user: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Reactivate a user: their assignments apply again."""
    _change(ctx, "reactivate_user", user, actor=actor, reason=reason, at=at)


@user_app.command("list")
def user_list(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """List users with their status."""
    _list(ctx, "user", ["name", "status", "email"], fmt, out)


@sa_app.command("create")
def sa_create(
    ctx: typer.Context, name: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Create a service account."""
    with handled():
        _one_word(name, "service account")
    _change(ctx, "create_service_account", name, actor=actor, reason=reason, at=at)


@sa_app.command("deactivate")
def sa_deactivate(
    ctx: typer.Context, name: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Deactivate a service account."""
    _change(ctx, "deactivate_service_account", name, actor=actor, reason=reason, at=at)


@sa_app.command("reactivate")
def sa_reactivate(
    ctx: typer.Context, name: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Reactivate a service account."""
    _change(ctx, "reactivate_service_account", name, actor=actor, reason=reason, at=at)


@sa_app.command("list")
def sa_list(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """List service accounts with their status."""
    _list(ctx, "service_account", ["name", "status"], fmt, out)


@team_app.command("create")
def team_create(
    ctx: typer.Context, team: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Create a team."""
    _change(ctx, "create_team", team, actor=actor, reason=reason, at=at)


@team_app.command("delete")
def team_delete(
    ctx: typer.Context, team: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Delete a team: its memberships and assignments grant nothing from now on."""
    _change(ctx, "delete_team", team, actor=actor, reason=reason, at=at)


@team_app.command("add-member")
def team_add_member(
    ctx: typer.Context,
    team: str,
    member: Annotated[str, typer.Argument(help="user:NAME or service_account:NAME.")],
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Add a user or service account to a team."""
    _change(ctx, "add_team_member", team, member, actor=actor, reason=reason, at=at)


@team_app.command("remove-member")
def team_remove_member(
    ctx: typer.Context,
    team: str,
    member: Annotated[str, typer.Argument(help="user:NAME or service_account:NAME.")],
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Remove a member from a team."""
    _change(ctx, "remove_team_member", team, member, actor=actor, reason=reason, at=at)


@team_app.command("list")
def team_list(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """List teams with their status."""
    _list(ctx, "team", ["name", "status"], fmt, out)


def _list(
    ctx: typer.Context,
    kind: str,
    columns: list[str],
    fmt: Format,
    out: Path | None,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    with handled():
        led = open_ledger(ctx)
        try:
            rows = led.entities(kind)
        finally:
            led.close()
        emit([shape(r) for r in rows] if shape else rows, fmt, out, columns)


# -- roles ----------------------------------------------------------------------------------


@role_app.command("create")
def role_create(
    ctx: typer.Context,
    role: str,
    scope: Annotated[str, typer.Option("--scope", help="organization or tenant.")] = "tenant",
    base: Annotated[str | None, typer.Option("--base", help="A role of the same scope to build on.")] = None,
    permission: Annotated[list[str] | None, typer.Option("--permission", "-p", help="TYPE:ACTION (repeat).")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Create a custom role: its own permissions plus those of its base role (live)."""
    if scope not in ("organization", "tenant"):
        fail(f"scope: {scope!r} is not organization or tenant")
    _change(ctx, "create_role", role, scope, permission or [], base, description, actor=actor, reason=reason, at=at)


@role_app.command("change")
def role_change(
    ctx: typer.Context,
    role: str,
    add: Annotated[list[str] | None, typer.Option("--add", "-a", help="TYPE:ACTION to add (repeat).")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", "-r", help="TYPE:ACTION to remove (repeat).")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Add or remove permissions of a custom role."""
    _change(ctx, "change_role", role, add or [], remove or [], actor=actor, reason=reason, at=at)


@role_app.command("delete")
def role_delete(
    ctx: typer.Context, role: str, actor: ActorOption = None, reason: ReasonOption = None, at: AtOption = None
) -> None:
    """Delete a custom role that nobody holds and no role builds on."""
    _change(ctx, "delete_role", role, actor=actor, reason=reason, at=at)


@role_app.command("assign")
def role_assign(
    ctx: typer.Context,
    role: str,
    to: Annotated[str, typer.Option("--to", help="user:NAME, team:NAME or service_account:NAME.")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="The tenant (tenant roles).")] = None,
    resource: Annotated[str | None, typer.Option("--resource", help="Narrow to one TYPE/ID in the tenant.")] = None,
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help=f"From this instant it grants nothing: {CLI_TIME_HELP}.")
    ] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Give a principal a role (in a tenant, optionally on one resource, optionally until a time)."""
    with handled():
        expires_at = when(expires_at, "expires_at")
    _change(ctx, "assign_role", role, to, tenant, resource, expires_at, actor=actor, reason=reason, at=at)


@role_app.command("unassign")
def role_unassign(
    ctx: typer.Context,
    role: str,
    from_: Annotated[str, typer.Option("--from", help="user:NAME, team:NAME or service_account:NAME.")],
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    resource: Annotated[str | None, typer.Option("--resource")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Take a role away from a principal."""
    _change(ctx, "unassign_role", role, from_, tenant, resource, actor=actor, reason=reason, at=at)


def _effective(roles: dict[str, dict[str, Any]], name: str) -> list[str]:
    perms: list[str] = []
    seen: set[str] = set()
    current: str | None = name
    while current and current not in seen and current in roles:
        seen.add(current)
        perms += [p for p in roles[current]["permissions"] if p not in perms]
        current = roles[current]["ref"]
    return perms


@role_app.command("list")
def role_list(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """List roles: scope, base, own and effective permissions, number of assignments."""
    with handled():
        led = open_ledger(ctx)
        try:
            roles = {r["name"]: r for r in led.entities("role") if r["status"] != "deleted"}
            counts: dict[str, int] = {}
            for g in led.grants():
                counts[g["role"]] = counts.get(g["role"], 0) + 1
        finally:
            led.close()
        rows = [
            {
                "role": n,
                "scope": r["scope"],
                "base": r["ref"],
                "predefined": r.get("predefined", False),
                "permissions": r["permissions"],
                "effective": _effective(roles, n),
                "assignments": counts.get(n, 0),
            }
            for n, r in sorted(roles.items())
        ]
        emit(rows, fmt, out, ["role", "scope", "base", "predefined", "permissions", "effective", "assignments"])


@role_app.command("show")
def role_show(ctx: typer.Context, role: str, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Show one role: its permissions, its base chain and who holds it."""
    with handled():
        led = open_ledger(ctx)
        try:
            roles = {r["name"]: r for r in led.entities("role") if r["status"] != "deleted"}
            if role not in roles:
                from ledger.names import require_recorded

                require_recorded(led.store, role=role)  # never recorded: a typo, with the closest names
                fail(f"unknown role {role!r} (it was deleted)")
            grants = led.grants(role)
        finally:
            led.close()
        r = roles[role]
        chain, cur = [], r["ref"]
        while cur and cur in roles and cur not in chain:
            chain.append(cur)
            cur = roles[cur]["ref"]
        info = {
            "role": role,
            "scope": r["scope"],
            "predefined": r.get("predefined", False),
            "description": r.get("description"),
            "base_chain": chain,
            "permissions": r["permissions"],
            "effective": _effective(roles, role),
            "holders": grants,
        }
        if fmt is Format.json:
            emit_text(json.dumps(info, indent=2) + "\n", out)
            return
        rows = [
            {
                "principal": g["principal"],
                "tenant": g["tenant"],
                "resource": g["resource"],
                "expires_at": g["expires_at"],
            }
            for g in grants
        ]
        title = (
            f"{role} ({r['scope']}{', predefined' if info['predefined'] else ''}; base: "
            f"{' -> '.join(chain) or 'none'}; effective: {', '.join(info['effective']) or 'nothing'})"
        )
        emit(rows, fmt, out, ["principal", "tenant", "resource", "expires_at"], title=title)


# -- connectors and access -----------------------------------------------------------------


@connector_app.command("register")
def connector_register(
    ctx: typer.Context,
    connector: str,
    tenant: Annotated[str, typer.Option("--tenant")],
    connector_type: Annotated[str | None, typer.Option("--type", help="e.g. aws, gcp, azure.")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Register a service connector (the ledger never stores its credentials)."""
    _change(ctx, "register_connector", connector, tenant, connector_type, actor=actor, reason=reason, at=at)


@connector_app.command("list")
def connector_list(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """List service connectors with their tenant, type and status."""
    _list(
        ctx,
        "connector",
        ["connector", "tenant", "type", "status"],
        fmt,
        out,
        lambda r: {
            "connector": r["name"].split("/", 1)[1],
            "tenant": r["ref"],
            "type": r.get("connector_type"),
            "status": r["status"],
        },
    )


@connector_app.command("delete")
def connector_delete(
    ctx: typer.Context,
    connector: str,
    tenant: Annotated[str, typer.Option("--tenant")],
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Delete a service connector."""
    _change(ctx, "delete_connector", connector, tenant, actor=actor, reason=reason, at=at)


@connector_app.command("access")
def connector_access(
    ctx: typer.Context,
    connector: str,
    tenant: Annotated[str, typer.Option("--tenant")],
    by: Annotated[str, typer.Option("--by", help="user:NAME or service_account:NAME.")],
    outcome: Annotated[str, typer.Option("--outcome", help="allowed or denied.")],
    context: Annotated[str | None, typer.Option("--context", help="e.g. the pipeline run.")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Record that a principal read (or was denied) a connector's secret."""
    _change(
        ctx,
        "record_connector_access",
        connector,
        tenant,
        by,
        outcome,
        context,
        actor=actor or "system",
        reason=reason,
        at=at,
    )


@access_app.command("record")
def access_record(
    ctx: typer.Context,
    principal: Principal,
    action: str,
    resource: Annotated[str, typer.Argument(help="TYPE/ID.")],
    outcome: Annotated[str, typer.Option("--outcome", help="allowed or denied.")],
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
    at: AtOption = None,
) -> None:
    """Record that a principal used (or was denied) an action on a resource."""
    _change(
        ctx,
        "record_access",
        principal,
        action,
        resource,
        outcome,
        tenant,
        actor=actor or "system",
        reason=reason,
        at=at,
    )


# -- import, export, verify, digest -------------------------------------------------------


def _lines(path: Path) -> Iterator[bytes]:
    stream = sys.stdin.buffer if str(path) == "-" else open(path, "rb")  # noqa: SIM115
    try:
        for line in stream:
            yield line.rstrip(b"\r\n")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _progress(description: str, total: int | None, unit: str = "bytes") -> Any:
    """A rich progress bar on stderr, shown only on a terminal (never in pipes or logs)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    return Progress(
        TextColumn(description),
        BarColumn(),
        amount,
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def import_(
    ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A JSONL file of events (- for standard input).")]
) -> None:
    """Import events from JSONL: the whole file or, at the first bad line, nothing."""
    if str(file) != "-" and not file.is_file():
        fail(f"no file {file}")
    with no_new_file_if_refused(ctx), handled():
        led = open_ledger(ctx, create=True)
        try:
            total = file.stat().st_size if str(file) != "-" else None
            # A second process parses while this one writes: worth its start-up from a few MB on.
            from ledger.pipeline import default_workers

            workers = default_workers() if total is None or total > 4_000_000 else 0
            with _progress("importing", total) as bar:
                task = bar.add_task("import", total=total)
                advance: Callable[[int], None] = lambda n: bar.advance(task, n)  # noqa: E731
                result = led.import_lines(_lines(file), progress=advance, workers=workers)
        finally:
            led.close()
    skipped = f", {result.skipped} already recorded (same id)" if result.skipped else ""
    where = f" (positions {result.first}-{result.last})" if result.first is not None else ""
    typer.echo(f"imported {result.written} events{where}{skipped}")


def export(
    ctx: typer.Context,
    from_: Annotated[
        str | None, typer.Option("--from", help=f"Only events at or after this time: {CLI_TIME_HELP}.")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help=f"Only events at or before this time ({CLI_TIME_HELP_AGAIN}).")
    ] = None,
    out: OutOption = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="jsonl (events) or casbin (the permission state as a casbin model and policy; --out DIR).",
        ),
    ] = "jsonl",
    at: Annotated[str | None, typer.Option("--at", help="casbin: the state at this time (default now).")] = None,
) -> None:
    """Export events as JSONL (the import format), or the permission state for casbin."""
    with handled():
        from_, to, at = when(from_, "from"), when(to, "to"), when(at, "at")
        if fmt == "casbin":
            if out is None:
                fail("export --format casbin needs --out DIR")
            from projections.casbin_export import export_casbin

            led = open_ledger(ctx)
            try:
                export_casbin(led, out, at=at)
            finally:
                led.close()
            typer.echo(f"wrote casbin model and policy to {out}")
            return
        if fmt != "jsonl":
            fail(f"format: {fmt!r} is not jsonl or casbin")
        led = open_ledger(ctx)
        try:
            first, last = led.positions_between(from_, to)
            sink = sys.stdout.buffer if out is None else open_private(out)  # noqa: SIM115
            try:
                written = 0
                with _progress("exporting", max(0, last - first + 1), unit="events") as bar:
                    task = bar.add_task("export", total=max(0, last - first + 1))
                    for written, line in enumerate(led.export_lines(from_, to), 1):
                        sink.write(line)
                        if written % 10_000 == 0:
                            bar.update(task, completed=written)
            finally:
                if out is not None:
                    sink.close()
                else:
                    sink.flush()
            if out is not None:
                typer.echo(f"wrote {out}: {written:,} event{'' if written == 1 else 's'} as jsonl", err=True)
        finally:
            led.close()


def verify(
    ctx: typer.Context,
    digest_file: Annotated[Path | None, typer.Option("--digest", help="A digest kept outside the ledger.")] = None,
    warehouse: Annotated[
        Path | None,
        typer.Option(
            "--warehouse",
            help="The DuckDB warehouse to check against the events (default: the ledger's own, if it exists).",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Only the log: its chain, times, seals and head; not the derived tables (write "
            "model, ids, snapshots, warehouse), which cost a replay of the change events and "
            "a fresh sync.",
        ),
    ] = False,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """Check the hash chain, seals, times and head (and a digest), and that every derived table agrees with the
    events: exit 0 if intact, 1 naming the first bad position or the derived rows that disagree."""
    from ledger.integrity import read_digest

    with handled():
        digest_data = read_digest(digest_file) if digest_file is not None else None
        led = None
        try:
            # A schema the ledger did not make is refused on open: for verify, that is the finding.
            led = open_ledger(ctx)
            result = _verify_all(led, digest_data, warehouse, quick)
        except IntegrityFailure as exc:  # a derived row a check relies on is itself wrong: that is the finding
            typer.echo(f"TAMPERED: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            if led is not None:
                led.close()
    if fmt is Format.table and out is None:
        if result.ok:
            typer.echo(
                f"ok: {result.events} events, chain intact up to position {result.head}, "
                f"{result.seals} seals; head link {result.link}"
            )
            for note in result.notes:
                typer.echo(f"note: {note}")
        elif result.first_bad is not None:
            typer.echo(f"TAMPERED: first bad position {result.first_bad}: {result.problem}", err=True)
        else:
            typer.echo(f"TAMPERED: {result.problem}", err=True)
            for problem in result.derived[1:]:
                typer.echo(f"  also: {problem}", err=True)
    else:
        emit([result.as_dict()], fmt, out)
    if not result.ok:
        raise typer.Exit(1)


def _verify_all(led: Any, digest_data: dict[str, Any] | None, warehouse: Path | None, quick: bool) -> Any:
    """verify's checks: the log, then (unless quick) the derived tables, the snapshots and the warehouse."""
    try:
        total = led.head()
    except (IntegrityFailure, StorageError):
        total = led.store.count()  # the walk below names what is wrong with the head (or the schema)
    with _progress("verifying", total, unit="events") as bar:
        task = bar.add_task("verify", total=total)
        result = led.verify(digest_data, progress=lambda n: bar.advance(task, n), derived=not quick)
    if not quick and (result.ok or result.derived):  # the log intact (only derived rows may disagree)
        # The projections' snapshots are derived data too: each compared with the fold of the events.
        from projections.pit import check_snapshots

        derived = check_snapshots(led)
        # So is the warehouse the audits read: compared, table by table, with a fresh sync.
        from reports.warehouse import compare_with_events, default_path

        kept = str(warehouse) if warehouse is not None else default_path(led)
        if warehouse is not None and not warehouse.exists():
            raise typer.BadParameter(f"no warehouse at {warehouse}", param_hint="--warehouse")
        if kept != ":memory:" and os.path.exists(kept):
            with _progress("checking the warehouse", total, unit="events") as bar:
                task = bar.add_task("warehouse", total=total)
                derived += compare_with_events(led, kept, progress=lambda n: bar.advance(task, n))
        if derived:
            result.derived.extend(derived)
            result.ok = False
            result.problem = (
                f"the log is intact, but {len(result.derived)} derived row(s) disagree with "
                f"its events: {result.derived[0]}"
            )
    return result


def digest(ctx: typer.Context, out: OutOption = None) -> None:
    """Print (or write to --out) the head's position and chain link, to keep outside the ledger."""
    with handled():
        led = open_ledger(ctx)
        try:
            data = led.digest()
        finally:
            led.close()
        emit_text(json.dumps(data, indent=2) + "\n", out)
