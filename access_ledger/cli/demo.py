"""`access-ledger demo`: a year of a realistic ML platform, recorded, audited and exported as evidence.

Everything goes through the paths a user's data takes: the bulk import, verify, the DuckDB
warehouse, the audits and the evidence export, and `audit leavers` over the HR system's
terminations file the demo writes beside the bundle. The ledger file is replaced only if it is
an earlier demo's (its first event says it was generated); any other ledger needs --force.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from access_ledger.cli.common import Interrupted, db_url, fail, handled, is_interruption

DEMO_EVIDENCE = "demo-evidence"
TERMINATIONS = "access-ledger-demo-terminations.csv"  # beside the evidence folder
#: The rows of `audit leavers` to act on (the rest lists each leaver's deactivation and removals).
LEAVER_FINDINGS = frozenset({"late-deactivation", "access-after-termination"})


class Size(str, Enum):
    small = "small"
    large = "large"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Where to build the demo ledger (default: the global --db, else ./access-ledger.db)."
        ),
    ] = None,
    size: Annotated[
        Size,
        typer.Option(
            "--size",
            help="small: a 20-person platform, about 20,000 events; large: "
            "10,000 users and 500 tenants, about 1,000,000 events.",
        ),
    ] = Size.small,
    evidence: Annotated[Path, typer.Option("--evidence", help="Folder for the evidence bundle.")] = Path(DEMO_EVIDENCE),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing ledger that is not a demo's (SQLite only).")
    ] = False,
    end: Annotated[
        str | None, typer.Option("--end", hidden=True, help="End the history here instead of now (reproducible runs).")
    ] = None,
) -> None:
    """Build a year of a realistic ML platform's access history, audit it, and export the evidence."""
    from rich.console import Console

    from access_ledger.demo.generator import SIZES, generate
    from ledger.app import AccessLedger
    from ledger.private import write_private
    from ledger.timeutil import now, parse_instant

    # Piped into a file or a pager, the summary keeps its table rows on one line each.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    url = db or db_url(ctx)
    started = time.perf_counter()
    hr = evidence.parent / TERMINATIONS
    with handled():
        run_leavers = _leavers_audit()  # before anything is written
        _make_room(url, evidence, force)
        scenario = generate(SIZES[size.value], parse_instant(end, "end") if end else now())
        led = AccessLedger.open(url, create=True)
        written = 0
        try:
            if led.head():
                fail(f"the ledger at {led.store.label} is not empty: the demo builds a new ledger (give --db NEW.db)")
            whose = "acme-ml's" if size is Size.small else "a large"
            console.print(f"[bold]access-ledger demo[/]: a year of {whose} ML platform, into {escape(led.store.label)}")
            with _phase(console, "1/4 import") as done:
                _import(led, scenario, size)
                written = led.head()
                done(f"{written:,} events generated, validated and recorded")
            accepted = _accept_one(led, scenario)
            write_private(hr, scenario.terminations_csv())
            result, leavers = _export(led, evidence, url, hr, run_leavers, console)
            with _phase(console, "4/4 point in time") as done:
                answer = _point_in_time(led, scenario)
                done("the unauthorised read asked of the ledger as of its instant")
        except BaseException as exc:
            if not is_interruption(exc):
                raise
            if written:
                raise Interrupted(
                    f"interrupted: the demo ledger {led.store.label} was written ({written:,} events), "
                    f"its evidence bundle was not; run the demo again to replace both"
                ) from None
            led.close()
            if not url.startswith(("postgresql://", "postgres://")):
                _remove_ledger(url)  # the empty file this run created
            raise Interrupted("interrupted: nothing was written; run the demo again") from None
        finally:
            led.close()
    _summary(console, scenario, result, leavers, answer, hr, accepted)
    elapsed = time.perf_counter() - started
    console.print(f"\ndone in {elapsed:.1f} s. Next, try:")
    for command in _next_commands(ctx, db, scenario, hr):
        console.print(f"  {escape(command)}", soft_wrap=True)


def _leavers_audit() -> Any:
    """reports.leavers.run_leavers, which checks the planted late leaver; without it the demo cannot
    say what it found."""
    try:
        from reports.leavers import run_leavers
    except ImportError:
        fail(
            "this build has no leavers audit (reports/leavers.py, `audit leavers`): the demo's planted late "
            "leaver could not be checked, so the demo does not run"
        )
    return run_leavers


def _make_room(url: str, evidence: Path, force: bool) -> None:
    """Remove an earlier demo's ledger, warehouse and bundle; refuse to touch anything else without --force."""
    from access_ledger.demo.generator import is_generated
    from ledger.app import AccessLedger

    postgres = url.startswith(("postgresql://", "postgres://"))
    if not postgres and os.path.exists(url):
        demo_made = False
        try:
            with AccessLedger.open(url) as led:
                first = next(led.read(1, 1), (0, {}))[1]
                # A ledger with no event at all holds nothing to lose: typically a demo stopped
                # before its import (all or nothing) was committed.
                demo_made = is_generated(first) or (not first and led.head() == 0)
        except Exception:  # unreadable: certainly not a demo ledger we may replace
            demo_made = False
        if not demo_made and not force:
            fail(
                f"{url} already exists and is not a demo ledger: the demo builds a new one (give --db NEW.db, or "
                "--force to replace it)"
            )
        _remove_ledger(url)
    if evidence.exists():
        if evidence.is_dir() and not any(evidence.iterdir()):
            return
        if not (evidence / "manifest.json").is_file() and not _unfinished_bundle(evidence) and not force:
            fail(f"{evidence} exists and is not an evidence bundle: give --evidence NEW-FOLDER, or --force")
        if evidence.is_dir():
            shutil.rmtree(evidence)
        else:
            evidence.unlink()


def _remove_ledger(path: str) -> None:
    """A SQLite ledger's file and the files SQLite and the warehouse keep beside it."""
    for suffix in ("", "-wal", "-shm", "-journal", ".duckdb", ".duckdb.wal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def _unfinished_bundle(folder: Path) -> bool:
    """A folder holding only what an evidence export writes before its manifest (an export that
    was killed before it could clean up)."""
    layout = {
        "digest.json": False,
        "report.html": False,
        "check_bundle.py": False,
        "events": True,
        "audits": True,
        "charts": True,
    }
    return folder.is_dir() and all(layout.get(p.name) == p.is_dir() for p in folder.iterdir())


def _import(led: Any, scenario: Any, size: Size) -> None:
    from access_ledger.cli.evidence import progress_bar
    from ledger.pipeline import default_workers

    total = scenario.shape.events
    with progress_bar("import") as report:

        def lines() -> Any:
            for n, line in enumerate(scenario.lines(), 1):
                if n % 5000 == 0:
                    report(f"{n:,} events", min(0.99, n / total))
                yield line

        led.import_lines(lines(), workers=default_workers() if size is Size.large else 0)


def _export(
    led: Any, evidence: Path, url: str, hr: Path, run_leavers: Any, console: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """The evidence bundle, and the leavers of the HR file past their SLA (from the same warehouse)."""
    from access_ledger.cli.evidence import progress_bar
    from reports.evidence import export_bundle
    from reports.warehouse import Warehouse

    command = "access-ledger" + (f" --db {shlex.quote(url)}" if url != "access-ledger.db" else "") + " demo"
    with Warehouse.open(led) as wh:
        with _phase(console, "2/4 evidence") as done, progress_bar("evidence") as report:
            result = export_bundle(led, evidence, command=command, progress=report, replace=True, hr=hr)
            done(f"verify, warehouse, {len(result.manifest['audits'])} audits, report and bundle")
        with _phase(console, "3/4 leavers") as done, progress_bar("leavers") as report:
            report("audit leavers --hr", 0.5)
            leavers = run_leavers(wh, str(hr), sla="24h")
            done("the HR terminations file reconciled with the ledger")
    return result, [r for r in leavers.rows if r.get("finding") in LEAVER_FINDINGS]


@contextmanager
def _phase(console: Any, label: str) -> Iterator[Callable[[str], None]]:
    """A line once a phase of the demo is done, with what it did and how long it took (plain text when the
    output is not a terminal; the phase's progress bar, on a terminal, is on stderr and goes away)."""
    started = time.perf_counter()
    said: list[str] = []
    yield said.append
    console.print(f"  {label}: {said[-1] if said else 'done'} in {time.perf_counter() - started:.1f} s", markup=False)


def _point_in_time(led: Any, scenario: Any) -> dict[str, Any] | None:
    """Ask the ledger, as of the unauthorised read, whether that principal was allowed it."""
    from projections.answers import Question, check
    from projections.pit import Timeline

    breach = next((i for i in scenario.incidents if i.kind == "unauthorised-secret-read"), None)
    if breach is None:
        return None
    connector = _connector(scenario, breach)
    state = Timeline(led).for_principal(breach.principal, led.position_at(breach.at))
    answer = check(
        state,
        Question(breach.principal, "read_secret_value", f"service_connector/{connector}", breach.tenant),
        breach.at,
    )
    return answer


def _connector(scenario: Any, incident: Any) -> str:
    return incident.detail.split("credentials of ", 1)[1].split(" ", 1)[0]


def escape(text: str) -> str:
    """A path or name as data in a rich console line (`[b]x.db` is not markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


ACCEPT_REASON = "SEC-88: bootstrap access of the platform lead, re-reviewed in the next quarterly review"


def _accept_one(led: Any, scenario: Any) -> dict[str, Any] | None:
    """Triage as a compliance engineer would: accept the planted self-grant (hygiene), with a reason and an expiry
    90 days after the decision, by an organization admin who is not its principal (the authority rules ask member:update)."""
    from datetime import timedelta

    from access_ledger import triage
    from ledger.timeutil import format_instant, now, parse_instant

    incident = next((i for i in scenario.incidents if i.kind == "self-grant"), None)
    admins = sorted(g["principal"] for g in led.grants("org_admin") if g["tenant"] is None)
    actor = next((a for a in admins if incident is not None and a != incident.principal), None)
    if incident is None or actor is None:
        return None
    found = [
        f
        for f in triage.findings(led, audits=("hygiene",))
        if f["kind"] == "self-grant" and f["principal"] == incident.principal and f["state"] == "open"
    ]
    if not found:
        return None
    newest = parse_instant(led.newest_at() or "", "at")
    # On a whole second before now: the bundle's period ends at the export's start, to the second, and the
    # decision must be inside it for audits/findings.csv to carry it. Its expiry is 90 days after it (a demo
    # generated for an earlier year decides now, so not after that year's newest event).
    decided = max(newest, now().replace(microsecond=0) - timedelta(seconds=1))
    at, until = format_instant(decided), format_instant(decided + timedelta(days=90))
    done = triage.decide(
        led, found[0]["finding_id"], accept=True, reason=ACCEPT_REASON, until=until, actor=actor, at=at, audit="hygiene"
    )
    return {**done["finding"], "actor": actor, "until": until, "position": done["position"]}


def _summary(
    console: Any,
    scenario: Any,
    result: Any,
    leavers: list[dict[str, Any]],
    answer: dict[str, Any] | None,
    hr: Path,
    accepted: dict[str, Any] | None = None,
) -> None:
    from rich.table import Table

    m = result.manifest
    verified = m["ledger"]["verify"]
    c = scenario.counts
    console.print(
        f"  recorded {m['period']['events']:,} events: {c['TenantCreated'] - c['TenantDeleted']:,} tenants, "
        f"{c['UserCreated']:,} people, {c['ServiceAccountCreated']:,} service accounts, "
        f"{c['ConnectorRegistered'] - c['ConnectorDeleted']:,} cloud connectors, "
        f"{c['RoleCreated']:,} custom roles, {c['RoleAssigned']:,} role assignments"
    )
    console.print(
        f"  verify: {'intact' if verified['ok'] else 'TAMPERED'}, hash chain over {verified['events']:,} "
        f"events, head link {verified['link'][:16]}..."
    )
    planted_who = {i.principal for i in scenario.incidents}
    planted_at = {i.position for i in scenario.incidents}
    findings = {**result.findings, "leavers": leavers}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name, rows in findings.items():
        for row in rows:
            groups.setdefault((name, row.get("who") or ""), []).append(row)
    total = sum(len(rows) for rows in groups.values())
    # One row per audit and principal: the report and the bundle's audits list each finding.
    table = Table(
        title=f"Findings that need attention: {total}, in {len(groups)} rows (one per audit and "
        "principal; report.html lists each)",
        title_justify="left",
    )
    for col in ("audit", "finding", "who", "where", "planted"):
        table.add_column(col, overflow="fold", no_wrap=col != "where")
    unplanted = 0
    for (name, who), rows in groups.items():
        kinds = sorted({str(r.get("finding") or r.get("rule")) for r in rows})
        finding = kinds[0] if len(kinds) == 1 else f"{len(kinds)} rules" if name == "sod" else ", ".join(kinds)
        if len(rows) > 1:
            finding += f" ({len(rows)} rows)"
        wheres = sorted({str(r.get("where") or "organization") for r in rows})
        where = ", ".join(w.replace("tenant:", "") for w in wheres[:3]) + (
            f" +{len(wheres) - 3}" if len(wheres) > 3 else ""
        )
        planted = who in planted_who or any(set(r.get("positions") or ()) & planted_at for r in rows)
        unplanted += not planted
        table.add_row(escape(name), escape(finding), escape(who), escape(where), "yes" if planted else "[red]NO[/]")
    console.print()
    console.print(table)
    triaged = {(accepted["audit"], accepted["principal"])} if accepted else set()
    missed = [
        i
        for i in scenario.incidents
        if (i.audit, i.principal) not in triaged
        and not any(
            r.get("who") == i.principal or i.position in (r.get("positions") or ()) for r in findings.get(i.audit, ())
        )
    ]
    console.print(
        f"  {len(scenario.incidents) - len(missed)} of {len(scenario.incidents)} planted incidents found by "
        "their audits; " + (f"[red]{unplanted} finding(s) not planted[/]" if unplanted else "nothing else flagged")
    )
    if accepted is not None:
        console.print(
            escape(
                f"  accepted, not needing attention: {accepted['audit']} {accepted['kind']} of {accepted['principal']} "
                f"({accepted['finding_id']}), by {accepted['actor']} until {accepted['until']}: {ACCEPT_REASON} "
                f"(report.html, Accepted and suppressed findings; audits/findings.csv: "
                f"{m.get('findings', {}).get('accepted', 0)} accepted)"
            )
        )
    _authority_line(console, scenario, findings.get("authority", []))
    if answer is not None:
        verdict = "allowed" if answer["allowed"] else f"no: {answer['why_not']}"
        console.print(
            escape(
                f"  point in time: could {answer['principal']} read {answer['resource']} at {answer['at']}? {verdict}"
            )
        )
    console.print(
        f"  HR leavers file: {escape(str(hr))} ({len(scenario.terminations)} leavers, read by `audit leavers --hr`; "
        "in the bundle as hr/hr.csv, reconciled by its leavers audit)"
    )
    console.print(
        f"  evidence bundle: {escape(str(result.path))}/ ({len(m['files'])} files and manifest.json, report: "
        f"{escape(str(result.path))}/report.html)"
    )


def _authority_line(console: Any, scenario: Any, rows: list[dict[str, Any]]) -> None:
    """What `audit authority` found of the planted unauthorised changes, and whether it flagged anything else."""
    planted = [i for i in scenario.incidents if i.audit == "authority"]
    found = [(i, r) for i in planted for r in rows if i.position in (r.get("positions") or ())]
    others = [r for r in rows if not any(i.position in (r.get("positions") or ()) for i in planted)]
    shown = escape(", ".join(f"{r['finding']} by {r['who']} at position {r['position']}" for _, r in found))
    console.print(
        f"  audit authority: {len(found)} of {len(planted)} planted changes by actors not allowed to make "
        f"them found ({shown}); "
        + (f"[red]{len(others)} other change(s) flagged[/]" if others else "nothing else flagged by it"),
        markup=True,
        highlight=False,
    )


def _next_commands(ctx: typer.Context, db: str | None, scenario: Any, hr: Path) -> list[str]:
    chosen = db or (ctx.find_root().obj or {}).get("db")
    prefix = "access-ledger" + (f" --db {shlex.quote(chosen)}" if chosen else "")
    by_kind = {i.kind: i for i in scenario.incidents}
    breach, sod = by_kind["unauthorised-secret-read"], by_kind["sod-conflict"]
    return [
        f"{prefix} check {breach.principal} read_secret_value service_connector/{_connector(scenario, breach)} "
        f"--tenant {breach.tenant} --at {breach.at}",
        f"{prefix} explain {sod.principal} promote model_version/fraud-detector-v3 --tenant {sod.tenant}",
        f"{prefix} audit hygiene",
        f"{prefix} audit reviews",
        f"{prefix} audit leavers --hr {shlex.quote(str(hr))}",
    ]
