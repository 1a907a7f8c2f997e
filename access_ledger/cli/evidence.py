"""`access-ledger evidence export|verify`: bundles of audit evidence an auditor keeps and re-checks."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from access_ledger.cli.audit import ConnectorOption, PrincipalOption, RoleOption, TenantOption
from access_ledger.cli.common import PeriodOption, fail, handled, open_ledger, period_or_range
from ledger.private import scrub
from ledger.timeutil import CLI_TIME_HELP, CLI_TIME_HELP_AGAIN

evidence_app = typer.Typer(help="Export evidence bundles for auditors and check them later.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(evidence_app, name="evidence")


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar on stderr (only when it is a terminal); yields report(what, fraction)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn(f"{label} [progress.description]{{task.description}}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=1.0)
        yield lambda what, done: bar.update(task, completed=done, description=what)


def _command(ctx: typer.Context, argv: list[str]) -> str:
    """The command line, rebuilt from the parsed options (the same however the CLI was started)."""
    db = (ctx.find_root().obj or {}).get("db")
    words = ["access-ledger"] + (["--db", db] if db else []) + argv
    return scrub(" ".join(shlex.quote(w) for w in words))  # no password of a --db URL is recorded


@evidence_app.command("export")
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create (or, with --zip, the zip file).")],
    start: Annotated[
        str | None, typer.Option("--from", help=f"Start of the period (default: the first event): {CLI_TIME_HELP}.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help=f"End of the period (default: now; {CLI_TIME_HELP_AGAIN}).")
    ] = None,
    period: PeriodOption = None,
    as_zip: Annotated[bool, typer.Option("--zip", help="Write one zip file instead of a folder.")] = False,
    window: Annotated[str, typer.Option("--window", help="Least-privilege window ending at --to.")] = "90d",
    rules: Annotated[Path | None, typer.Option("--rules", help="Separation-of-duties rules (TOML).")] = None,
    allow_tampered: Annotated[
        bool,
        typer.Option(
            "--allow-tampered",
            help="Export a ledger that fails verify anyway; the manifest's first line and the "
            "report's first banner say so.",
        ),
    ] = False,
    hr: Annotated[
        Path | None,
        typer.Option(
            "--hr",
            help="An HR terminations file (the CSV `audit leavers --hr` reads): copied into the bundle as "
            "hr/hr.csv, its SHA-256 in the manifest, reconciled by the leavers audit.",
        ),
    ] = None,
    sla: Annotated[
        str, typer.Option("--sla", help="With --hr: how soon after a termination the account must be deactivated.")
    ] = "24h",
    tenant: TenantOption = None,
    principal: PrincipalOption = None,
    connector: ConnectorOption = None,
    role: RoleOption = None,
) -> None:
    """Write the period's events, every audit, an offline HTML report and a manifest of SHA-256 hashes
    (with --tenant/--principal/--connector/--role: each audit's rows in that scope only, and the bundle says so)."""
    from access_ledger import api
    from reports.check_bundle import scope_lines
    from reports.evidence import TamperedLedger, export_bundle
    from reports.findings import count_words

    filters = {
        k: v for k, v in (("tenant", tenant), ("principal", principal), ("connector", connector), ("role", role)) if v
    }
    with handled():
        # The command recorded in the manifest names the instants the times typed resolved to.
        named = ["--period", period] if period else []
        start, end = period_or_range(period, start, end)
        if not period:
            named = (["--from", start] if start else []) + (["--to", end] if end else [])
        argv = (
            ["evidence", "export"]
            + named
            + ["--out", str(out)]
            + (["--zip"] if as_zip else [])
            + (["--window", window] if window != "90d" else [])
            + (["--rules", str(rules)] if rules else [])
            + (["--allow-tampered"] if allow_tampered else [])
            + (["--hr", str(hr)] if hr else [])
            + (["--sla", sla] if sla != "24h" else [])
            + [w for k, v in filters.items() for w in (f"--{k}", v)]
        )
        led = open_ledger(ctx)
        try:
            # A name never recorded is refused (a typo would filter every row away), before anything is written.
            api.require_recorded(led, principal, tenant, None)
            api.require_filters(led, connector, tenant, role)
            with progress_bar("evidence") as report:
                result = export_bundle(
                    led,
                    out,
                    start=start,
                    end=end,
                    as_zip=as_zip,
                    command=_command(ctx, argv),
                    window=window,
                    rules=rules,
                    progress=report,
                    allow_tampered=allow_tampered,
                    hr=hr,
                    sla=sla,
                    filters=filters,
                )
        except TamperedLedger as exc:
            fail(str(exc), code=1)
        finally:
            led.close()
    m = result.manifest
    attention = sum(a["needs_attention"] for a in m["audits"].values())
    routine = sum(a.get("routine", 0) for a in m["audits"].values())
    typer.echo(
        f"wrote {result.path}: {len(m['files'])} files and manifest.json, {result.events:,} events from "
        f"{m['period']['from']} to {m['period']['to']}, {count_words(attention, routine)}, in "
        f"{result.seconds:.1f} s"
    )
    if m["period"].get("coverage"):
        typer.echo(f"coverage: {m['period']['coverage']}")
    for line in scope_lines(m):
        typer.echo(f"scope: {line}")
    typer.echo(
        f"ledger verify at export: {'intact' if m['ledger']['verify']['ok'] else 'FAILED'}; "
        f"manifest.json sha256 {result.manifest_sha256}"
    )
    typer.echo(f"check it later with: access-ledger evidence verify {shlex.quote(str(result.path))}")


@evidence_app.command("verify")
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle folder or zip file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    digest: Annotated[
        Path | None,
        typer.Option(
            "--digest",
            help="A digest you hold (access-ledger digest --out): "
            "its link must be the one the bundle's events "
            "recompute at its position.",
        ),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The signer's signing.pub: the manifest and its end link must carry a valid signature by it.",
        ),
    ] = None,
    after: Annotated[
        Path | None,
        typer.Option("--after", help="The bundle before this one: this one must start exactly where it ended."),
    ] = None,
    recompute: Annotated[
        bool,
        typer.Option(
            "--recompute",
            help="Run every audit again over the bundle's own verified events and compare each audit file, "
            "chart, review record, the report and every count with the bundle's.",
        ),
    ] = False,
) -> None:
    """Re-hash every file of a bundle against its manifest and recompute the chain over its events, checked
    against an anchor from outside when given; exit 1 naming each problem."""
    from reports.check_bundle import coverage, printable, scope_lines
    from reports.evidence import BundleProblem, verify_bundle

    with handled():
        try:
            with progress_bar("recompute") if recompute else nullcontext(None) as report:
                check = verify_bundle(
                    bundle, digest=digest, public_key=public_key, after=after, recompute=recompute, progress=report
                )
        except BundleProblem as exc:
            fail(str(exc), code=1)  # a bundle that is not what it claims: a failed check, not a usage error
    if as_json:
        typer.echo(json.dumps(check.as_dict(), indent=2))
    else:
        for kind, names in (("changed", check.changed), ("missing", check.missing), ("added", check.added)):
            for name in names:  # a name is the bundle's: a newline or a terminal code in it is shown as data
                typer.echo(f"{kind}: {printable(name)}")
        for problem in check.problems:
            typer.echo(f"problem: {printable(problem, 2000)}")
        period = check.manifest.get("period", {})
        if check.ok:
            typer.echo(
                f"OK: {check.checked} files match the manifest of {bundle} (period {period.get('from')} to "
                f"{period.get('to')}; manifest.json sha256 {check.manifest_sha256})"
            )
            said = coverage(check.manifest)
            if said:
                typer.echo(f"coverage: {said}")
        for line in scope_lines(check.manifest):  # a filtered bundle says so in every verdict, passed or failed
            typer.echo(f"scope: {line}", err=not check.ok)
        for note in check.notes:
            typer.echo(f"note: {note}")
        if not check.ok:
            problems = len(check.changed) + len(check.missing) + len(check.added) + len(check.problems)
            first = f": {printable(check.problems[0], 2000)}" if check.problems else ""
            typer.echo(f"FAILED: {problems} difference(s) from the manifest of {bundle}{first}", err=True)
    if not check.ok:
        raise typer.Exit(code=1)


@evidence_app.command("checker")
def checker(
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (refused if it exists).")],
) -> None:
    """Write the standalone checker of this installed version and print its SHA-256: run it as
    `python3 -I FILE BUNDLE`, never the copy that travelled inside a bundle."""
    import hashlib

    from reports.bundle_chain import checker_bytes

    data = checker_bytes()
    with handled():
        try:
            with open(out, "xb") as f:
                f.write(data)
        except FileExistsError:
            fail(f"{out} exists: give a new file")
    typer.echo(f"wrote {out}: the checker of access-ledger {_version()}, SHA-256 {hashlib.sha256(data).hexdigest()}")
    typer.echo(f"run it as: python3 -I {shlex.quote(str(out))} BUNDLE [--public-key FILE] [--digest FILE]")


def _version() -> str:
    from importlib.metadata import version

    return version("access-ledger")
