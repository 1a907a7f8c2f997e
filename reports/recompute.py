"""`evidence verify --recompute`: a bundle's audits, charts, review records and report, made again from the
bundle's own verified events and compared with what it carries (#25: bundles reproducible without a key).

The events (events/events.jsonl, whose chain `evidence verify` has just recomputed from the manifest) are
imported, through the ledger's ordinary import, into a private ledger in a temporary folder (owner-only),
whose head link must then be the bundle's end link: it holds exactly the bundle's verified events. A
scratch warehouse is synced from it by the warehouse's own loader (reports/warehouse.py: locked-down
DuckDB, external access off, configuration locked), and every audit runs with this installed version's
SQL, which must be the SQL the manifest records. Each output file is written as the export writes it
(reports/evidence.py) and its SHA-256 compared with the manifest's entry (the files themselves were checked
against those entries before); each count the manifest gives of an audit is compared with the recomputed one.

What the bundle claims beyond its events (the ledger's digest and verify result at export, its head, the
export's time and command) cannot be recomputed: the report is rendered with those claims, so only they can
differ without a difference being found, and the notes say which they are. Nothing read from the bundle is
run: the SQL and the rules are this installation's own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reports.bundle_reader import BundleError, BundleReader
from reports.check_bundle import HR_COPY, printable

EVENTS = "events/events.jsonl"
Progress = Callable[[str, float], None]
#: What only the manifest (and so its signature, or the digest the exporter wrote) vouches for even with
#: --recompute: it describes the ledger at export, not the bundle's events.
CLAIMED = "the ledger's digest, head and verify result at export, the export's time and command"


def recompute(path: Path, manifest: dict[str, Any], progress: Progress | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of the bundle at `path`, whose files match `manifest` and whose chain recomputed."""
    from importlib.metadata import version

    from reports.audits import AUDITS, SHARED_SQL
    from reports.sql_files import sql_text

    report = progress or (lambda what, done: None)
    chain, period = manifest.get("chain"), manifest.get("period")
    if not isinstance(chain, dict) or not isinstance(period, dict):
        return ["cannot recompute: the manifest carries no chain (a bundle from an earlier version)"], []
    if chain.get("first_position") != 1:
        return [
            f"cannot recompute: the bundle's events start at position {chain.get('first_position')}, and the "
            "audits read the history before it (recompute a bundle exported from the ledger's first event)"
        ], []
    if not isinstance(chain.get("last_position"), int) or chain["last_position"] < 1:
        # Its audits were run over the ledger as it was after the period (its organization, its roles): the
        # bundle alone does not hold what they read.
        return ["cannot recompute: the bundle holds no events"], []
    tool = manifest.get("tool") if isinstance(manifest.get("tool"), dict) else {}
    mine = version("access-ledger")
    if tool.get("version") != mine:
        return [
            f"cannot recompute: the bundle was made by access-ledger {printable(tool.get('version'))!r}, this is {mine}: "
            "recompute it with the version that made it"
        ], []
    audits = manifest.get("audits") if isinstance(manifest.get("audits"), dict) else {}
    # The leavers audit is in a bundle exported with --hr (its HR file is hr/hr.csv, checked before this).
    known = set(AUDITS) | ({"leavers"} if "hr" in manifest else set())
    problems = [
        f"manifest.json: audit {printable(name)!r} is not one access-ledger {mine} runs"
        for name in sorted(set(audits) - known)
    ]
    sql_files = {name: audit.sql_files for name, audit in AUDITS.items()}
    if "leavers" in known:
        from reports import leavers

        sql_files["leavers"] = (leavers.SQL_FILE, SHARED_SQL)
    for name, files in sql_files.items():
        meta = audits.get(name)
        if not isinstance(meta, dict):
            problems.append(f"manifest.json: audit {name!r} is missing")
            continue
        recorded = meta.get("sql") if isinstance(meta.get("sql"), dict) else {}
        for f in sorted(set(recorded) | set(files)):
            if recorded.get(f) != (sql_text(f) if f in files else None):
                problems.append(f"manifest.json: the SQL of audit {name} ({f}) is not access-ledger {mine}'s")
    if problems:
        return problems, []
    with tempfile.TemporaryDirectory(prefix="access-ledger-recompute-") as tmp:
        os.chmod(tmp, 0o700)
        return _recompute_in(Path(tmp), path, manifest, report)


def _recompute_in(tmp: Path, path: Path, manifest: dict[str, Any], report: Progress) -> tuple[list[str], list[str]]:
    from ledger.app import AccessLedger
    from ledger.errors import LedgerError
    from reports.errors import ReportError
    from reports.warehouse import Warehouse

    chain = manifest["chain"]
    last = int(chain["last_position"])
    report("import the events", 0.05)
    with AccessLedger.open(str(tmp / "ledger.db"), create=True) as led:
        try:
            with BundleReader(path) as bundle:
                led.import_lines(_lines(bundle, manifest), workers=2 if last >= 200_000 else 0)
        except (LedgerError, BundleError) as exc:
            return [f"cannot recompute: the bundle's events do not import as recorded ({exc})"], []
        head, _, link = led.store.head()
        if (head, link) != (last, chain.get("end_link")):
            return [
                f"cannot recompute: the bundle's events imported give position {head} and another link than "
                "the manifest's end link (they were not recorded as they stand)"
            ], []
        hr_data = None
        if "hr" in manifest:
            try:
                with BundleReader(path) as bundle:
                    hr_data = bundle.read(HR_COPY, int(manifest["files"][HR_COPY]["bytes"]))
            except (BundleError, KeyError):
                return [f"cannot recompute: {HR_COPY} cannot be read"], []
        report("warehouse", 0.3)
        try:
            with Warehouse.open(led, tmp / "warehouse.duckdb", scratch=True) as wh:
                wh.sync()
                return _compare(tmp / "bundle", wh, led, manifest, report, hr_data)
        except (LedgerError, ReportError) as exc:
            return [f"cannot recompute: {exc}"], []


def _lines(bundle: BundleReader, manifest: dict[str, Any]) -> Iterator[bytes]:
    """The lines of events/events.jsonl, read within its listed size."""
    rest = b""
    for chunk in bundle.stream(EVENTS, int(manifest["files"][EVENTS]["bytes"])):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _compare(
    out: Path, wh: Any, led: Any, manifest: dict[str, Any], report: Progress, hr_data: bytes | None = None
) -> tuple[list[str], list[str]]:
    """Write the bundle's derived files again into `out` as the export does, with the manifest's filters and
    over its HR file's copy (`hr_data`); one problem per difference."""
    from reports.audits import AUDITS, run_audit, split_filters
    from reports.evidence import (
        _charts,
        _organization,
        _write_audit,
        _write_events_parquet,
        run_hr_leavers,
        scope_context,
        write_findings,
    )
    from reports.findings import row_counts
    from reports.html import render_report
    from reports.review_evidence import write_reviews
    from reports.sod import DEFAULT_RULES

    period, chain = manifest["period"], manifest["chain"]
    first, last = int(chain["first_position"]), int(chain["last_position"])
    start_at, end_at = str(period.get("from")), str(period.get("to"))
    problems: list[str] = []
    notes: list[str] = []
    if led.positions_between(start_at, end_at) != (first, last) or period.get("events") != last - first + 1:
        problems.append(
            f"manifest.json: the period {printable(start_at)} to {printable(end_at)} does not hold the bundle's positions {first}-{last}"
        )
    for sub in ("events", "audits", "charts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _write_events_parquet(wh, first, last, out / "events" / "events.parquet")
    audits = manifest["audits"]
    params = {n: m.get("params") if isinstance(m.get("params"), dict) else {} for n, m in audits.items()}
    window = str(params["least-privilege"].get("window", "90d"))
    results: dict[str, Any] = {}
    attention: dict[str, int] = {}
    skipped: list[str] = []
    # The filters the manifest gives, applied as the export applied them: a filter removed from the manifest
    # makes the recomputed audits whole, and so different from the bundle's filtered files.
    filters = manifest.get("filters") if isinstance(manifest.get("filters"), dict) else {}
    names = list(AUDITS) + (["leavers"] if hr_data is not None else [])
    for i, name in enumerate(names):
        report(f"audit {name}", 0.35 + 0.45 * i / len(AUDITS))
        meta = audits[name]
        if name == "sod" and params[name].get("rules") != f"default ({DEFAULT_RULES})":
            # A rules file of the exporter's own, which the bundle does not carry: nothing to run it with.
            skipped.append(f"audits/{name}.*")
            continue
        applied, unanswered = split_filters(name, filters)
        if name == "leavers":
            sla = params[name].get("sla")
            if not isinstance(sla, str):
                problems.append("manifest.json: audits.leavers.params.sla is not a duration")
                continue
            result = run_hr_leavers(wh, out, hr_data, sla, end_at, filters)  # type: ignore[arg-type]
        else:
            result = run_audit(wh, name, at=end_at, start=start_at, end=end_at, window=window, sync=False, **applied)
        results[name] = result
        attention[name] = _write_audit(wh, result, out)
        counts = {
            "title": result.title,
            "description": result.description,
            "params": result.params,
            "columns": result.columns,
            "rows": len(result),
            "needs_attention": attention[name],
            "routine": row_counts(name, result)[1],
            "unfiltered": unanswered or None,
        }
        for key, value in counts.items():
            if meta.get(key) != value:
                problems.append(
                    f"manifest.json: audits.{name}.{key} differs from the audit recomputed from the bundle's events"
                )
    if skipped:
        skipped.append("audits/findings.csv*")
    elif manifest.get("findings") != write_findings(wh, results, out):
        problems.append("manifest.json: findings differs from the one recomputed from the bundle's events")
    report("charts and reviews", 0.82)
    charts = _charts(wh, results.get("secrets"), start_at, end_at, first, last, out)
    reviews = write_reviews(led, out, first, last)
    # The rest of the manifest's account of the outputs: each chart's SQL and file, each campaign's population.
    expected = {
        "charts": {n: {"title": c["title"], "file": f"charts/{n}.csv", "sql": c["sql"]} for n, c in charts.items()},
        "reviews": {
            r["campaign"]: {"file": r["file"], "population": r["population"], "start_position": r["start_position"]}
            for r in reviews
        },
    }
    for key, value in expected.items():
        if manifest.get(key) != value:
            problems.append(f"manifest.json: {key} differs from the one recomputed from the bundle's events")
    unrendered = bool(skipped)  # report.html is not made again (so not compared)
    if skipped:
        notes.append(
            f"{', '.join(skipped)} and report.html: made with a rules file the bundle does not carry "
            f"({printable(params['sod'].get('rules'))!r}): not recomputed"
        )
    else:
        report("report.html", 0.9)
        ledger = manifest.get("ledger") if isinstance(manifest.get("ledger"), dict) else {}
        context = {
            "organization": _organization(wh),
            "period": {k: v for k, v in period.items() if k not in ("first_position", "last_position", "events")},
            "generated_at": manifest.get("generated_at"),
            "version": manifest["tool"]["version"],
            "head": ledger.get("head"),
            "digest": ledger.get("digest"),
            "verify": ledger.get("verify") or {},
            "events": last - first + 1,
            **scope_context(filters, audits, manifest["hr"] if hr_data is not None else None),
        }
        try:
            html = render_report(context, results, charts, attention, reviews)
        except (TypeError, KeyError, AttributeError, ValueError, IndexError):
            # The claims the report is rendered with are not of the shapes the export writes.
            problems.append("manifest.json: its period, ledger or generation time is not what the export writes")
            unrendered = True
        else:
            (out / "report.html").write_text(html, encoding="utf-8")
    listed = manifest["files"]
    made = {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}
    for rel in sorted(set(made) | {r for r in listed if _derived(r)}):
        if any(rel.startswith(s[:-1]) for s in skipped) or (unrendered and rel == "report.html"):
            continue
        shown = printable(rel)  # a name from the manifest: safe to print, never markup
        if rel not in made:
            problems.append(f"{shown}: the bundle's events give no such file")
        elif rel not in listed:
            problems.append(f"{shown}: missing from the bundle, although its events give it")
        elif _sha256(made[rel]) != listed[rel]["sha256"]:
            problems.append(f"{shown}: differs from the one recomputed from the bundle's events")
    if not problems:
        notes.append(
            f"recomputed from the bundle's {last - first + 1:,} events: {len(made)} files and every count of "
            f"the manifest match; only a signature (or the anchor given) vouches for {CLAIMED}"
        )
    return problems, notes


def _derived(rel: str) -> bool:
    """Is `rel` a file the export derives from the events (all but the events, the chain, the digest, the checker)?"""
    return rel.startswith(("audits/", "charts/", "reviews/")) or rel in ("report.html", "events/events.parquet")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
