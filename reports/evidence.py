"""Evidence bundles (DESIGN section 7): a folder or zip an auditor keeps, re-checks and reads.

    manifest.json          what is in the bundle and how it was made: the SHA-256 of every other file,
                           the period, the ledger digest and verify result at export time, the SQL of
                           every query, the tool version, the generation time and the command line
    digest.json            the ledger digest alone (`access-ledger verify --digest digest.json`)
    report.html            the report: self-contained, offline, charts and sortable tables
    events/events.jsonl    the period's events in the interchange format (imports after the history before the period)
    events/events.parquet  the same events as a table, one column per field, with positions
    audits/NAME.csv        every audit of the period, every row (formula-safe)
    audits/NAME.parquet    the same rows as a table (times as UTC TIMESTAMP)
    audits/NAME.json       the audit's summary and its rows that need attention (not every row)
    charts/NAME.csv        the figures behind each chart
    hr/hr.csv              with --hr: the HR terminations file as read (its SHA-256 also in the manifest's "hr"),
                           which the leavers audit (audits/leavers.*) reconciles; both checkers compare the two
    reviews/NAME.population.jsonl, reviews/NAME.json
                           each access review campaign of the period: its population as hashed into its
                           start event, and its decisions and remediation (reports/review_evidence.py)

A filtered export (--tenant, --principal, --connector, --role) keeps in each audit only the rows in that scope,
as `audit NAME --tenant ...` does; the manifest's "filters" names them, each audit's parameters (also in its hashed
audits/NAME.json) the ones applied and its "unfiltered" the ones it cannot answer; check_bundle.scope_problems
holds the three to agree, so a filter cannot be dropped from the manifest alone.

The events are cut at the ledger's head when the export starts, so the JSONL, the Parquet file
and the audits describe the same log even if it grows meanwhile. The full verify, the JSONL file
and the chain file are one pass over the log, made by a worker process while DuckDB does the rest;
on a log of ledger.integrity.PARALLEL_FROM events or more, that pass runs in segments in processes
of its own, whose parts of the two files are joined in position order.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ledger.private import FOLDER_MODE, csv_safe_sql, make_private, open_private, private_umask, scrub, write_private
from reports.bundle_chain import (
    CHAIN,
    ChainWriter,
    chain_entry,
    check_anchors,
    checker_entry,
    sign_manifest,
    write_checker,
)
from reports.bundle_reader import MANIFEST, MANIFEST_LIMIT, BundleError, BundleProblem, BundleReader, check_name
from reports.check_bundle import FILTER_NAMES, HR_COPY, scope_problems, vouching
from reports.findings import ATTENTION, attention_filter, needs_attention, plain, row_counts, split_rows

__all__ = [
    "ATTENTION",
    "BundleError",
    "BundleProblem",
    "TamperedLedger",
    "export_bundle",
    "needs_attention",
    "split_rows",
    "verify_bundle",
]

if TYPE_CHECKING:
    import pyarrow as pa

    from ledger.app import AccessLedger
    from reports.audits import AuditResult
    from reports.warehouse import Warehouse

FORMAT = "access-ledger-evidence/1"
HASH_CHUNK = 1 << 20
#: From this many events in the ledger on, verify and the JSONL are written by a worker process.
WORKER_FROM = 50_000
EVENTS_FILE, CHAIN_FILE = "events.jsonl", "chain.jsonl"  # in events/
#: In events/: the walk's verified lines of the positions before the period (the export's own warehouse
#: needs the whole history), read and removed before anything is hashed; never part of a bundle.
HISTORY_FILE = ".history.jsonl"
WALK_FILES = (EVENTS_FILE, CHAIN_FILE, HISTORY_FILE)
PARTS = ".parts"  # events/.parts/: the segments of the log walk, until joined into the two files
Progress = Callable[[str, float], None]  # (what is being done, fraction of the export done)


@dataclass(frozen=True)
class HrInput:
    """An HR file given to the export: the name given, its bytes as read once, its row count, the SLA."""

    source: str
    data: bytes
    rows: int
    sla: str


class TamperedLedger(BundleError):
    """The ledger fails verify: no evidence is exported from it unless --allow-tampered."""


@dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    seconds: float
    manifest_sha256: str
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # rows needing attention, per audit

    @property
    def events(self) -> int:
        return int(self.manifest["period"]["events"])


@dataclass
class BundleCheck:
    """What `evidence verify` found."""

    path: Path
    ok: bool
    checked: int
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # members that cannot be read safely, then the chain and the anchors (reports/bundle_chain.py); one line each
    problems: list[str] = field(default_factory=list)
    manifest_sha256: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.path),
            "ok": self.ok,
            "files_checked": self.checked,
            "changed": self.changed,
            "missing": self.missing,
            "added": self.added,
            "problems": self.problems,
            "notes": self.notes,
            "manifest_sha256": self.manifest_sha256,
        }


# -- export ------------------------------------------------------------------------------------


def export_bundle(
    led: AccessLedger,
    out: str | Path,
    *,
    start: str | None = None,
    end: str | None = None,
    as_zip: bool = False,
    command: str | None = None,
    window: str = "90d",
    rules: str | Path | None = None,
    progress: Progress | None = None,
    replace: bool = False,
    allow_tampered: bool = False,
    hr: str | Path | None = None,
    sla: str = "24h",
    filters: dict[str, str] | None = None,
) -> ExportResult:
    """Write the evidence bundle of the period [start, end] (default: all of history up to now) to `out`.

    `out` is a folder (created; it must not exist or be empty unless `replace`), or with `as_zip`
    a zip file (`.zip` is added to the name if missing). Every file and folder written is
    owner-only (0600, 0700) whatever the umask. A ledger that fails verify is refused
    (TamperedLedger, nothing left behind) unless `allow_tampered`: then the manifest's first line
    and the report's first banner say so. `hr`: an HR terminations file, copied into the bundle (hr/hr.csv)
    and reconciled by the leavers audit (with `sla`). `filters` ({tenant, principal, connector, role}: name):
    each audit keeps only the rows in that scope, as `audit NAME --tenant ...` does; the manifest, the report
    and both checkers say so.
    """
    from ledger.timeutil import canonical, format_instant, now
    from reports.leavers import parse_hr, read_hr_bytes, sla_span

    started = time.perf_counter()
    report = progress or (lambda what, done: None)
    generated_at = format_instant(now().replace(microsecond=0))
    end_at = canonical(end, "to") if end else generated_at
    head = led.head()
    if head == 0:
        raise BundleError("the ledger is empty: there is nothing to export")
    start_at = canonical(start, "from") if start else (led.time_of(1) or end_at)
    if start_at > end_at:
        raise BundleError(f"from: {start_at} is after to: {end_at}")
    first, last = led.positions_between(start_at, end_at)
    last = min(last, head)
    given = {k: v for k, v in (filters or {}).items() if v is not None}
    for key, value in given.items():
        if key not in FILTER_NAMES or not isinstance(value, str) or not value:
            raise BundleError(f"{key}: not a filter of the evidence export (give {', '.join(FILTER_NAMES)})")
    hr_input: HrInput | None = None
    if hr is not None:
        # The bytes read once are the ones checked, copied, hashed and reconciled (a file swapped after this
        # read changes nothing in the bundle). A bad file or SLA is refused before anything is written.
        data = read_hr_bytes(hr)
        sla_span(sla)
        hr_input = HrInput(str(hr), data, len(parse_hr(str(hr), data).rows), sla)
    target = Path(out)
    if as_zip and target.suffix != ".zip":
        target = target.with_name(target.name + ".zip")
    existed = target.is_dir()
    with private_umask():
        folder = _prepare(target, as_zip, replace)
    try:
        with private_umask():
            manifest, findings = _write_bundle(
                led,
                folder,
                start_at,
                end_at,
                first,
                last,
                head,
                generated_at,
                command,
                window,
                rules,
                report,
                allow_tampered,
                hr_input,
                given,
            )
        report("manifest", 0.97)
        data = _manifest_bytes(manifest)
        write_private(folder / MANIFEST, data)
        make_private(folder)
        if as_zip:
            report("zip", 0.98)
            _zip(folder, target)
    except BaseException:
        # A failed or interrupted export leaves no half bundle behind (the folder was new or empty).
        if not as_zip:
            for path in folder.iterdir() if existed else [folder]:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    finally:
        if as_zip:
            shutil.rmtree(folder, ignore_errors=True)
    report("done", 1.0)
    return ExportResult(target, manifest, time.perf_counter() - started, hashlib.sha256(data).hexdigest(), findings)


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as indented JSON; a "warning" (a tampered ledger exported anyway) is on its first line."""
    text = json.dumps(manifest, indent=2, sort_keys=False)
    if "warning" in manifest:
        text = "{" + text[1:].lstrip()  # `{"warning": ...,` on line 1, still JSON
    return text.encode() + b"\n"


def _prepare(target: Path, as_zip: bool, replace: bool) -> Path:
    if as_zip:
        if target.exists() and not replace:
            raise BundleError(f"{target} already exists: choose another --out")
        if not target.parent.is_dir():
            raise BundleError(f"folder {target.parent} does not exist")
        return Path(tempfile.mkdtemp(prefix=".evidence-", dir=target.parent))
    if target.exists():
        if not target.is_dir():
            raise BundleError(f"{target} exists and is not a folder")
        if any(target.iterdir()):
            if not replace:
                raise BundleError(f"{target} is not empty: an evidence bundle goes into a new folder")
            shutil.rmtree(target)
    if not target.parent.is_dir():
        raise BundleError(f"folder {target.parent} does not exist")
    target.mkdir(exist_ok=True)
    os.chmod(target, FOLDER_MODE)
    return target


def period_coverage(start_at: str, end_at: str, begins: str, newest: str) -> dict[str, Any]:
    """How much of the period [start_at, end_at] a bundle of a ledger whose events run from `begins` to
    `newest` covers. The ledger still accepts events dated at or after its newest one, so a period ending
    at or after it is not complete: the bundle covers up to the newest event. A period ending before the
    first event holds no events. `coverage` says it in words (None: the whole period)."""
    from ledger.timeutil import parse_instant

    end, first, last = parse_instant(end_at), parse_instant(begins), parse_instant(newest)
    empty = end < first
    complete = end < last
    words = []
    if empty:
        words.append(f"the ledger begins {begins}: this period holds no events")
    else:
        if parse_instant(start_at) < first:
            words.append(f"the ledger begins {begins}")
        if not complete:
            words.append(
                f"covers up to {newest}, the newest event: the ledger may still record events of the "
                f"period, which runs to {end_at}"
            )
    return {
        "ledger_begins": begins,
        "newest_event": newest,
        "complete": complete,
        "holds_no_events": empty,
        "covers_to": end_at if complete else newest,
        "coverage": "; ".join(words) or None,
    }


def _write_bundle(
    led: AccessLedger,
    folder: Path,
    start_at: str,
    end_at: str,
    first: int,
    last: int,
    head: int,
    generated_at: str,
    command: str | None,
    window: str,
    rules: str | Path | None,
    report: Progress,
    allow_tampered: bool = False,
    hr: HrInput | None = None,
    filters: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    from importlib.metadata import version

    from reports.audits import AUDITS, run_audit, split_filters
    from reports.html import render_report
    from reports.review_evidence import write_reviews

    for sub in ("events", "audits", "charts"):
        (folder / sub).mkdir(exist_ok=True)
    write_checker(folder)
    # The head is cut when the export starts: its time is the newest event the bundle can cover.
    coverage = period_coverage(start_at, end_at, led.time_of(1) or end_at, led.time_of(head) or end_at)
    jsonl = folder / "events" / "events.jsonl"
    # The pass over the whole log (verify, the JSONL and the chain file) runs in a worker meanwhile.
    pool, log_job = _start_worker(led, jsonl, first, last)
    try:
        digest = led.digest()
        write_private(folder / "digest.json", json.dumps(digest, indent=2) + "\n")
        report("verify, events.jsonl", 0.05)
        log_pass = (
            log_job.result() if log_job is not None else _verify_and_write(led.store.url, jsonl, first, last, led)
        )
        verified = log_pass["verify"]
        if not verified.get("ok") and not allow_tampered:
            raise TamperedLedger(
                f"the ledger fails verify at position {verified.get('first_bad_position')}: "
                f"{verified.get('problem')}; no bundle written (--allow-tampered exports it "
                "anyway, marked as such)"
            )
        # Every audit, chart, count and review record reads this warehouse, filled from the bytes the walk
        # just verified (a ledger or warehouse file swapped meanwhile is never read): see _own_warehouse.
        report("warehouse", 0.3)
        wh = _own_warehouse(led, folder, first, last, log_pass)
        try:
            report("events.parquet", 0.4)
            _write_events_parquet(wh, first, last, folder / "events" / "events.parquet")
            results: dict[str, AuditResult] = {}
            audits_meta: dict[str, Any] = {}
            given = filters or {}
            for i, name in enumerate(AUDITS):
                report(f"audit {name}", 0.45 + 0.35 * i / len(AUDITS))
                applied, unanswered = split_filters(name, given)
                result = run_audit(
                    wh, name, at=end_at, start=start_at, end=end_at, window=window, rules=rules, sync=False, **applied
                )
                results[name] = result
                audits_meta[name] = audit_entry(wh, result, folder, unanswered)
            if hr is not None:
                report("audit leavers", 0.8)
                results["leavers"] = run_hr_leavers(wh, folder, hr.data, hr.sla, end_at, given)
                audits_meta["leavers"] = audit_entry(wh, results["leavers"], folder, split_filters("leavers", given)[1])
            triaged = write_findings(wh, results, folder)
            report("charts", 0.82)
            charts = _charts(wh, results.get("secrets"), start_at, end_at, first, last, folder)
            organization = _organization(wh)
            report("access reviews", 0.84)
            started = wh.con.execute(
                "SELECT count(*) FROM events WHERE type = 'ReviewStarted' AND position <= ?", [last]
            ).fetchone()
            reviews = write_reviews(wh.led, folder, first, last) if started and started[0] else []
            report("hashing", 0.86)
            hashes = {
                rel: _hash_entry(path)
                for rel, path in _bundle_files(folder)
                if rel not in ("events/events.jsonl", CHAIN)
            }
            report("report.html", 0.9)
            context = {
                "organization": organization,
                "period": {"from": start_at, "to": end_at, **coverage},
                "generated_at": generated_at,
                "version": version("access-ledger"),
                "head": head,
                "digest": digest,
                "verify": verified,
                "events": last - first + 1 if last >= first else 0,
                **scope_context(filters or {}, audits_meta, hr_entry(hr) if hr is not None else None),
            }
            html = render_report(
                context, results, charts, {n: m["needs_attention"] for n, m in audits_meta.items()}, reviews
            )
            findings = {name: split_rows(r, 1000, 0)[0] for name, r in results.items()}
            write_private(folder / "report.html", html)
        finally:
            wh.close()
    except BaseException:
        # Failed or interrupted: the worker's walk (minutes on a big ledger, and it ignores Ctrl-C)
        # is of no use any more; the half-written bundle is removed by the caller.
        if pool is not None:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    hashes["events/events.jsonl"] = {"sha256": log_pass["jsonl"]["sha256"], "bytes": log_pass["jsonl"]["bytes"]}
    chain = log_pass["chain"]
    hashes[CHAIN] = {"sha256": chain.pop("sha256"), "bytes": chain.pop("bytes")}
    hashes["report.html"] = _hash_entry(folder / "report.html")
    files = {rel: hashes[rel] if rel in hashes else _hash_entry(path) for rel, path in _bundle_files(folder)}
    warning = (
        {
            "warning": f"TAMPERED LEDGER: verify failed at export (position "
            f"{verified.get('first_bad_position')}: {verified.get('problem')}); exported anyway "
            "with --allow-tampered"
        }
        if not verified.get("ok")
        else {}
    )
    manifest: dict[str, Any] = {
        **warning,
        "format": FORMAT,
        "tool": {"name": "access-ledger", "version": version("access-ledger")},
        "checker": checker_entry(),
        "generated_at": generated_at,
        "command": scrub(
            command if command is not None else " ".join(_quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
        ),
        "period": {
            "from": start_at,
            "to": end_at,
            "first_position": first,
            "last_position": last,
            "events": max(0, last - first + 1),
            **coverage,
        },
        "ledger": {
            "location": led.store.label,
            "organization": organization.get("name"),
            "preset": organization.get("preset"),
            "head": head,
            "digest": digest,
            "verify": verified,
        },
        "audits": audits_meta,
        "findings": triaged,
        "charts": {
            name: {"title": c["title"], "file": f"charts/{name}.csv", "sql": c["sql"]} for name, c in charts.items()
        },
        "reviews": {
            r["campaign"]: {"file": r["file"], "population": r["population"], "start_position": r["start_position"]}
            for r in reviews
        },
        "chain": chain,
        "files": files,
    }
    if filters:
        manifest["filters"] = {k: filters[k] for k in FILTER_NAMES if k in filters}
    if hr is not None:
        manifest["hr"] = hr_entry(hr)
    return _sign(sign_manifest(manifest)), findings


def audit_entry(wh: Warehouse, result: AuditResult, folder: Path, unanswered: list[str]) -> dict[str, Any]:
    """Write one audit's files; its manifest entry (with the filters given that it cannot answer, if any)."""
    attention = _write_audit(wh, result, folder)
    entry = {
        "title": result.title,
        "description": result.description,
        "params": result.params,
        "columns": result.columns,
        "rows": len(result),
        "needs_attention": attention,
        "routine": row_counts(result.name, result)[1],
        "files": [f"audits/{result.name}.{ext}" for ext in ("csv", "parquet", "json")],
        "sql": result.sql,
    }
    if unanswered:
        entry["unfiltered"] = unanswered
    return entry


def run_hr_leavers(
    wh: Warehouse, folder: Path, data: bytes, sla: str, end_at: str, filters: dict[str, str]
) -> AuditResult:
    """Copy an HR file's bytes into the bundle (hr/hr.csv) and run the leavers audit over exactly those bytes,
    named by their place in the bundle (so the same run over the copy gives the same files)."""
    from reports.audits import split_filters
    from reports.leavers import parse_hr, run_leavers

    (folder / "hr").mkdir(exist_ok=True)
    write_private(folder / HR_COPY, data)
    applied = split_filters("leavers", filters)[0]
    return run_leavers(wh, parse_hr(HR_COPY, data), sla=sla, at=end_at, sync=False, **applied)


def hr_entry(hr: HrInput) -> dict[str, Any]:
    """The manifest's record of the HR file: its copy's name, SHA-256 and size, its rows, the name it was given as."""
    return {
        "file": HR_COPY,
        "sha256": hashlib.sha256(hr.data).hexdigest(),
        "bytes": len(hr.data),
        "rows": hr.rows,
        "source": scrub(hr.source),
        "sla": hr.sla,
    }


def scope_context(filters: dict[str, Any], audits: dict[str, Any], hr: dict[str, Any] | None) -> dict[str, Any]:
    """What the report says of the bundle's scope: its filters, the audits that could not answer one, its HR file."""
    return {
        "filters": filters,
        "unfiltered": {n: m["unfiltered"] for n, m in audits.items() if isinstance(m, dict) and m.get("unfiltered")},
        "hr": hr,
    }


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _start_worker(
    led: AccessLedger, jsonl: Path, first: int, last: int
) -> tuple[ProcessPoolExecutor | None, Future[dict[str, Any]] | None]:
    """Verify the whole log and write the period's JSONL and chain file in one pass, in a worker process
    while DuckDB does the rest (None: a small or in-memory ledger, done in this process, no start-up cost)."""
    url = led.store.url
    if url == ":memory:" or url.startswith("file:") or led.head() < WORKER_FROM:
        return None, None
    import multiprocessing

    from ledger.pipeline import bound_to, children_deaf_to_ctrl_c, quiet_resource_tracker

    quiet_resource_tracker()  # the worker's own pool of segment walkers cannot clean up after Ctrl-C
    pool = ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=bound_to, initargs=(os.getpid(),)
    )
    with children_deaf_to_ctrl_c():  # the worker starts in submit: deaf before it can run bound_to
        return pool, pool.submit(_verify_and_write, url, jsonl, first, last)


def _verify_and_write(url: str, path: Path, first: int, last: int, led: AccessLedger | None = None) -> dict[str, Any]:
    """Verify the log at `url` and write positions first..last as JSONL, and their chain file, as the walk
    passes them, so the log is read once; positions before `first` go to HISTORY_FILE beside it. On a
    large log the walk runs in segments, in worker processes (see _Parts); else, or should the segments
    not match, in one walk here. When that walk stops short of `last` (a ledger that fails
    verification), the rest is copied as stored.
    Returns {"verify": the verify result, "jsonl" and "history": {"sha256", "bytes"}, "chain": the
    manifest's entry}."""
    from ledger.app import AccessLedger

    own = led is None
    led = led or AccessLedger.open(url)
    parts = _Parts(path.parent, first, last)
    # the one walk's writers, once it starts: (JSONL file, _Lines, ChainWriter, history file, its _Lines)
    single: list[Any] = []

    def start_single() -> None:
        if not single:
            f = open_private(path)
            hf = open_private(path.parent / HISTORY_FILE)
            single.extend(
                [
                    f,
                    _Lines(f, first, last),
                    ChainWriter(path.parent / CHAIN_FILE, first, last),
                    hf,
                    _Lines(hf, 1, first - 1),
                ]
            )

    def each_batch(rows: list[tuple[Any, ...]]) -> None:
        start_single()
        single[1].take(rows)
        single[2].take(rows)
        single[4].take(rows)

    try:
        verified = led.verify(each_batch=each_batch, derived=False, segments=parts).as_dict()
        if not single and parts.complete(verified["events"]):
            return {"verify": verified, **parts.finish()}
        parts.discard()
        start_single()
        f, lines, chain, hf, history = single
        if history.next <= history.last:
            history.copy_rest(led)
        if lines.next <= last:
            lines.copy_rest(led)
        f.close()
        hf.close()
        return {
            "verify": verified,
            "jsonl": {"sha256": lines.sha.hexdigest(), "bytes": lines.size},
            "history": {"sha256": history.sha.hexdigest(), "bytes": history.size},
            "chain": chain.finish(led),
        }
    finally:
        if single:
            single[0].close()
            single[2].f.close()
            single[3].close()
        parts.discard()
        if own:
            led.close()


class _Lines:
    """The JSONL file of positions first..last, written from the verify walk's batches (which come
    in position order, each position once) and hashed as it is written (unless not `hashed`)."""

    def __init__(self, f: Any, first: int, last: int, hashed: bool = True):
        self.f, self.first, self.last = f, first, last
        self.next = first  # the next position to write
        self.sha = hashlib.sha256() if hashed else None
        self.size = 0

    def take(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows or rows[-1][0] < self.next or rows[0][0] > self.last:
            return
        first, last = self.next, self.last
        self._write([r[4] for r in rows if first <= r[0] <= last])
        self.next = min(rows[-1][0], last) + 1

    def copy_rest(self, led: AccessLedger) -> None:
        buf: list[bytes] = []
        for _, state in led.read_bytes(self.next, self.last):
            buf.append(state)
            if len(buf) >= 20_000:
                self._write(buf)
                buf = []
        self._write(buf)
        self.next = self.last + 1

    def _write(self, states: list[bytes]) -> None:
        if not states:
            return
        data = b"\n".join(states) + b"\n"
        if self.sha is not None:
            self.sha.update(data)
        self.f.write(data)
        self.size += len(data)


class _Parts:
    """The export's log walk in segments (a ledger.integrity.Segments). In each worker process, a
    segment's lines of events.jsonl and chain.jsonl go to files of its own under events/.parts/
    (_Part); here they are joined into the two files, in position order, as the segments finish,
    and hashed as they are joined. A half-joined result is removed by `discard` (the one walk then
    writes the files)."""

    def __init__(self, folder: Path, first: int, last: int):
        self.folder, self.first, self.last = folder, first, last
        self._reset()

    def _reset(self) -> None:
        self.next = 1  # the segment to join next starts here
        self.waiting: dict[int, tuple[int, dict[str, str | None]]] = {}
        self.out: dict[str, Any] = {}  # file name: (open file, sha256, bytes written)
        self.start_link: str | None = None
        self.end_link: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # what a worker needs: no files, no hashes
        return {"folder": self.folder, "first": self.first, "last": self.last}

    def open(self, start: int, until: int, link: str) -> _Part:
        return _Part(self.folder / PARTS, start, self.first, self.last)

    def collect(self, start: int, until: int, result: dict[str, str | None]) -> None:
        if not self.out:
            for name in WALK_FILES:
                self.out[name] = [open_private(self.folder / name), hashlib.sha256(), 0]  # written through its fd
        self.waiting[start] = (until, result)
        while self.next in self.waiting:
            until, result = self.waiting.pop(self.next)
            for name in WALK_FILES:
                self._append(_Part.path(self.folder / PARTS, self.next, name), self.out[name])
            self.start_link = self.start_link or result["start_link"]
            self.end_link = self.end_link or result["end_link"]
            self.next = until + 1

    @staticmethod
    def _append(part: Path, out: list[Any]) -> None:
        """Hash the part and copy it (in the kernel) to the end of the joined file; remove the part."""
        f, sha = out[0], out[1]
        with open(part, "rb") as src:
            while chunk := src.read(HASH_CHUNK * 4):
                sha.update(chunk)
            size = src.tell()
            copied = 0
            try:
                while copied < size:
                    n = os.copy_file_range(src.fileno(), f.fileno(), size - copied, copied)
                    if n == 0:
                        raise OSError(f"{part}: copied {copied} of {size} bytes")
                    copied += n
            except OSError as e:
                if copied or e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                src.seek(0)  # a file system without copy_file_range
                shutil.copyfileobj(src, f, HASH_CHUNK * 4)
                f.flush()
        out[2] += size
        part.unlink()

    def complete(self, events: int) -> bool:
        """Were positions 1..events walked in segments and all joined?"""
        return bool(self.out) and self.next == events + 1

    def finish(self) -> dict[str, Any]:
        for f, _, _ in self.out.values():
            f.close()
        (events_sha, events_size), (chain_sha, chain_size), (history_sha, history_size) = (
            (s.hexdigest(), n) for _, s, n in (self.out[name] for name in WALK_FILES)
        )
        self.out = {}
        return {
            "jsonl": {"sha256": events_sha, "bytes": events_size},
            "history": {"sha256": history_sha, "bytes": history_size},
            "chain": chain_entry(self.first, self.last, self.start_link, self.end_link, chain_sha, chain_size),
        }

    def discard(self) -> None:
        """Remove the parts and whatever was joined of them."""
        for name, (f, _, _) in self.out.items():
            f.close()
            (self.folder / name).unlink(missing_ok=True)
        shutil.rmtree(self.folder / PARTS, ignore_errors=True)
        self._reset()


class _Part:
    """One segment's lines of events.jsonl and chain.jsonl, written in a worker process (not hashed:
    _Parts hashes them as it joins them)."""

    def __init__(self, folder: Path, start: int, first: int, last: int):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
        self.f = open_private(self.path(folder, start, EVENTS_FILE))
        self.lines = _Lines(self.f, max(first, start), last, hashed=False)
        self.hf = open_private(self.path(folder, start, HISTORY_FILE))
        self.history = _Lines(self.hf, start, first - 1, hashed=False)
        # The segment before passes position first - 1 when the period starts at this one.
        self.chain = ChainWriter(self.path(folder, start, CHAIN_FILE), first, last, hashed=False)

    @staticmethod
    def path(folder: Path, start: int, name: str) -> Path:
        return folder / f"{start:012d}.{name}"

    def take(self, rows: list[tuple[Any, ...]]) -> None:
        self.lines.take(rows)
        self.history.take(rows)
        self.chain.take(rows)

    def close(self) -> dict[str, str | None]:
        self.f.close()
        self.hf.close()
        return self.chain.close_part()


#: Bytes of the walk's files read (and parsed, and inserted) at a time by the export's own warehouse.
FILL_BLOCK = 1 << 24


def _own_warehouse(led: AccessLedger, folder: Path, first: int, last: int, log_pass: dict[str, Any]) -> Warehouse:
    """The export's own warehouse (in memory), filled with positions 1..last from the lines the log walk
    verified and wrote (HISTORY_FILE, then events.jsonl), each re-hashed as it is parsed.

    A proof taken by path cannot bind what another connection reads: a ledger file swapped after the
    walk opened it, or a cached warehouse whose record was rewritten with it, would reach the audits.
    So nothing here reads the ledger or the cached warehouse: the bytes parsed are those the walk
    hashed (a file changed since is refused), and no file of this warehouse exists to be swapped."""
    from reports.verified_log import VerifiedLog
    from reports.warehouse import Warehouse

    events = folder / "events"
    history = events / HISTORY_FILE
    log = VerifiedLog(last)
    try:
        # Its `led` is the verified log: the review audit and the review records read that, not the ledger.
        wh = Warehouse.open(cast("AccessLedger", log), ":memory:", scratch=True)
        try:
            parts = _verified_parts(
                [(history, 1, log_pass["history"]), (events / EVENTS_FILE, first, log_pass["jsonl"])], log.take
            )
            link = log_pass["chain"].get("end_link") if last >= first else None
            wh.fill(parts, last, link)
            log.con = wh.con
        except BaseException:
            wh.close()
            raise
    finally:
        history.unlink(missing_ok=True)
    return wh


def _verified_parts(
    files: list[tuple[Path, int, dict[str, Any]]], keep: Callable[[int, pa.Array], None]
) -> Iterator[tuple[pa.Table, int, int]]:
    """Each file's JSONL lines (positions start, start + 1, ...) as Arrow tables with their positions,
    hashed as they are read, and handed to `keep` (first position, lines); BundleError (before the last
    table is handed over) if a file's bytes are not the ones the walk wrote and hashed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from reports.warehouse import parse_lines

    for path, start, written in files:
        sha, size, position, rest = hashlib.sha256(), 0, start, b""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # replaced by a symlink, or removed, since the walk wrote it
            raise BundleError(
                f"{path.name}: cannot read what the log walk wrote ({exc.strerror}); no bundle written"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BundleError(f"{path.name}: not the regular file the log walk wrote; no bundle written")
        with os.fdopen(fd, "rb") as f:
            while block := f.read(FILL_BLOCK):
                sha.update(block)
                size += len(block)
                data = rest + block
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                if data:
                    # The lines as one Arrow array (no Python object per line: `keep` picks out the few it keeps).
                    lines = pc.split_pattern(pa.array([data], pa.large_binary()), b"\n")[0].values
                    n = len(lines) - 1
                    keep(position, lines.slice(0, n))
                    table = parse_lines(data)
                    positions = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n), start=position - 1)
                    yield table.set_column(0, "position", positions), position, position + n - 1
                    position += n
        if rest or (sha.hexdigest(), size) != (written["sha256"], written["bytes"]):
            raise BundleError(
                f"{path.name}: its bytes changed after the log walk wrote them (another process writes the "
                "bundle's folder); no bundle written"
            )


def _copy(wh: Warehouse, select: str, path: Path, fmt: str, even: bool = False) -> None:
    """COPY a query's rows to a file (parquet, csv or json); times as canonical UTC text in csv and json
    (`even`: see Warehouse.copy_to)."""
    target = str(path).replace("'", "''")
    options = {
        "parquet": "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1",
        "csv": "FORMAT csv, HEADER true",
        "json": "FORMAT json, ARRAY true",
    }[fmt]
    wh.copy_to(select, target, options, even)  # (the warehouse's own connection may write no file)


def _write_events_parquet(wh: Warehouse, first: int, last: int, path: Path) -> None:
    """The period's events as Parquet, one row per position in position order.

    A plain scan, no sort: the warehouse keeps events in position order (`fill` and `sync` insert them in
    order, and a table keeps its insertion order), and copy_to hands the writer batches of even size
    whatever the storage, so the file's bytes depend on the rows alone (`evidence verify --recompute`
    fills its own warehouse in other batches). The file is read back to check that its row i holds
    position first + i and that it holds the whole period; a scan out of order is written again, sorted.
    """
    select = f"SELECT * FROM events WHERE position BETWEEN {int(first)} AND {int(last)}"
    for order in ("", " ORDER BY position"):
        _copy(wh, select + order, path, "parquet", even=True)
        target = str(path).replace("'", "''")
        rows, out_of_place = (
            wh.writer()
            .execute(
                f"SELECT count(*), count(*) FILTER (WHERE position <> {int(first)} + file_row_number) "
                f"FROM read_parquet('{target}', file_row_number = true)"
            )
            .fetchall()[0]
        )
        if rows == max(0, last - first + 1) and not out_of_place:
            return
    raise BundleError(
        f"events.parquet holds {rows:,} rows, {out_of_place:,} out of place; the period has {max(0, last - first + 1):,}"
    )


#: A registered result's row number: a scan of a registered Arrow table in DuckDB does not keep the table's
#: order for a large one (the large demo's audits/review.csv differed on every run), so its files ORDER BY it.
ROW = "evidence_row_number"


def _numbered(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    return table.append_column(ROW, pa.array(range(table.num_rows), pa.int64()))


def _select_plain(table: pa.Table, name: str, csv: bool = False, where: str | None = None) -> str:
    """A SELECT over a registered Arrow table that turns timestamps into canonical UTC text (and with
    `csv`, text cells a spreadsheet would take for a formula into ones with a leading ')."""
    import pyarrow as pa

    cols = []
    for f in table.schema:
        q = '"' + f.name.replace('"', '""') + '"'
        if pa.types.is_timestamp(f.type):
            cols.append(
                f"CASE WHEN microsecond({q}) % 1000000 = 0 THEN strftime({q}, '%Y-%m-%dT%H:%M:%SZ') "
                f"ELSE strftime({q}, '%Y-%m-%dT%H:%M:%S.%fZ') END AS {q}"
            )
        elif csv and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            cols.append(f"{csv_safe_sql(q)} AS {q}")
        else:
            cols.append(q)
    return f"SELECT {', '.join(cols) or '*'} FROM {name}" + (f" WHERE {where}" if where else "") + f" ORDER BY {ROW}"


def _write_audit(wh: Warehouse, result: AuditResult, folder: Path) -> int:
    """Write one audit: every row as CSV (formula-safe) and Parquet, and as JSON its summary and the
    rows that need attention (in audit order); return how many rows need attention.

    The JSON file does not repeat every row (a year's secrets audit has millions, the CSV and the
    Parquet file hold them); the report reads the rows from memory, not from these files.
    """
    import orjson

    view = f"evidence_{result.name.replace('-', '_')}"
    audits = folder / "audits"
    wh.con.register(view, _numbered(result.table))
    try:
        _copy(wh, _select_plain(result.table, view, csv=True), audits / f"{result.name}.csv", "csv")
        _copy(wh, f"SELECT * EXCLUDE ({ROW}) FROM {view} ORDER BY {ROW}", audits / f"{result.name}.parquet", "parquet")
        findings: list[Any] = []
        if "finding" not in result.columns and ATTENTION.get(result.name) is not None:
            attention = 0
        else:
            rows = audits / f".{result.name}.findings.json"
            _copy(wh, _select_plain(result.table, view, where=attention_filter(result.name)), rows, "json")
            try:
                findings = orjson.loads(rows.read_bytes() or b"[]")
            finally:
                rows.unlink()
            attention = len(findings)
        summary = {
            "audit": result.name,
            "title": result.title,
            "description": result.description,
            "params": result.params,
            "columns": result.columns,
            "rows": len(result),
            "needs_attention": attention,
            "every_row": [f"audits/{result.name}.csv", f"audits/{result.name}.parquet"],
            "findings": findings,
        }
        write_private(audits / f"{result.name}.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        return attention
    finally:
        wh.con.unregister(view)


def write_findings(wh: Warehouse, results: dict[str, AuditResult], folder: Path) -> dict[str, Any]:
    """Write audits/findings.csv (formula-safe): the findings accepted or suppressed at the period's end, who
    decided, why and until when; return the manifest's account of it (file and counts)."""
    from reports.findings import triaged_table

    table = triaged_table(results)
    view = "evidence_findings"
    wh.con.register(view, _numbered(table))
    try:
        _copy(wh, _select_plain(table, view, csv=True), folder / "audits" / "findings.csv", "csv")
    finally:
        wh.con.unregister(view)
    states = table.column("finding_state").to_pylist()
    return {
        "file": "audits/findings.csv",
        "rows": table.num_rows,
        "accepted": states.count("accepted"),
        "suppressed": states.count("suppressed"),
    }


def _organization(wh: Warehouse) -> dict[str, Any]:
    rows = wh.con.execute("SELECT name, preset FROM events WHERE type = 'OrganizationCreated' LIMIT 1").fetchall()
    return {"name": rows[0][0], "preset": rows[0][1]} if rows else {}


# -- charts ------------------------------------------------------------------------------------


def _chart_sql() -> dict[str, str]:
    """The named statements of templates/charts.sql (each starts with a `-- name: NAME` line)."""
    from importlib import resources

    text = resources.files("reports").joinpath("templates", "charts.sql").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            name = line.split(":", 1)[1].strip()
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return {k: v.strip() for k, v in out.items()}


CHART_TITLES = {
    "privileged": "Privileged principals per tenant",
    "grants": "Grants and revocations per week",
    "secrets": "Connector-secret accesses per day",
}


def _charts(
    wh: Warehouse, secrets: AuditResult | None, start_at: str, end_at: str, first: int, last: int, folder: Path
) -> dict[str, dict[str, Any]]:
    """The figures behind the report's three charts, each also written as charts/NAME.csv."""
    import duckdb

    statements = _chart_sql()
    params = {"start": _naive(start_at), "end": _naive(end_at), "first": first, "last": last}
    if secrets is not None:
        wh.con.register("secrets_audit", secrets.table)
    else:
        wh.con.execute(
            "CREATE OR REPLACE TEMP VIEW secrets_audit AS SELECT NULL::VARCHAR AS finding, "
            "NULL::TIMESTAMP AS since, NULL::VARCHAR AS who, NULL::VARCHAR AS connector, "
            "NULL::VARCHAR AS tenant WHERE FALSE"
        )
    try:
        charts = {}
        for name, sql in statements.items():
            statement = duckdb.extract_statements(sql)[-1]
            used = {k: v for k, v in params.items() if k in statement.named_parameters}
            table = wh.con.sql(statement.query, params=used).to_arrow_table()
            wh.con.register("evidence_chart", _numbered(table))
            try:
                _copy(wh, _select_plain(table, "evidence_chart", csv=True), folder / "charts" / f"{name}.csv", "csv")
            finally:
                wh.con.unregister("evidence_chart")
            rows = [{k: plain(v) for k, v in r.items()} for r in table.to_pylist()]
            charts[name] = {"title": CHART_TITLES.get(name, name), "rows": rows, "sql": sql}
        return charts
    finally:
        if secrets is not None:
            wh.con.unregister("secrets_audit")


# -- signing, hashing, zipping -----------------------------------------------------------------


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _sign(manifest: dict[str, Any]) -> dict[str, Any]:
    """HMAC the manifest with the seal key when one is set (ACCESS_LEDGER_SEAL_KEY), like the ledger's seals."""
    from ledger.integrity import seal_key

    key = seal_key()
    if key is not None:
        manifest["signature"] = {
            "algorithm": "HMAC-SHA256",
            "key": "ACCESS_LEDGER_SEAL_KEY",
            "mac": hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest(),
        }
    return manifest


def _bundle_files(folder: Path) -> list[tuple[str, Path]]:
    """(name in the bundle, path) of every file but the manifest, sorted by name (not the log walk's
    parts, which a worker may be writing meanwhile)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != PARTS]
        found += [Path(root, name) for name in files]
    paths = ((p.relative_to(folder).as_posix(), p) for p in found if p.is_file())
    return sorted((rel, p) for rel, p in paths if rel != MANIFEST)


def _hash_entry(path: Path) -> dict[str, Any]:
    return {"sha256": _sha256_file(path), "bytes": path.stat().st_size}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _zip(folder: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    try:
        with (
            open_private(partial) as raw,
            zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as z,
        ):
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = path.relative_to(folder).as_posix()
                # Parquet is compressed already: stored as is, it zips in no time.
                kind = zipfile.ZIP_STORED if rel.endswith(".parquet") else zipfile.ZIP_DEFLATED
                z.write(path, rel, compress_type=kind)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# -- verify ------------------------------------------------------------------------------------


def verify_bundle(
    path: str | Path, *, recompute: bool = False, progress: Progress | None = None, **anchors: Path | None
) -> BundleCheck:
    """Re-hash every file of a bundle (folder or zip) against its manifest: changed, missing, added; then
    recompute its chain and check the anchors given (`digest`, `public_key`, `after`: see bundle_chain).
    With `recompute`, its audits, charts, review records and report are made again from its verified events
    and compared (reports/recompute.py); without, the notes say what vouches for them.

    Read through BundleReader (hostile input: bounded, regular files only, safe zip names); a
    member that cannot be read safely is a problem naming it (`check.problems`), a bundle whose
    manifest or names cannot be trusted at all a BundleProblem."""
    from ledger.integrity import seal_key

    target = Path(path)
    with BundleReader(target) as bundle:
        if not bundle.has(MANIFEST):
            raise BundleError(f"{target} has no {MANIFEST}: it is not an evidence bundle")
        raw = bundle.read(MANIFEST, MANIFEST_LIMIT)
        manifest = _parse_manifest(target, raw)
        listed = manifest["files"]
        check = BundleCheck(target, True, 0, manifest_sha256=hashlib.sha256(raw).hexdigest(), manifest=manifest)
        present = set(bundle.names()) - {MANIFEST}
        for name in sorted(listed):
            entry = listed[name]
            if name not in present:
                check.missing.append(name)
                continue
            check.checked += 1
            try:
                digest, size = bundle.sha256(name, entry["bytes"])
            except BundleProblem as exc:
                check.problems.append(str(exc))
                continue
            if digest != entry["sha256"] or size != entry["bytes"]:
                check.changed.append(name)
        check.added = sorted(present - set(listed))
    signature = manifest.get("signature")
    key = seal_key()
    signer = None
    if signature is not None:
        if key is None:
            check.notes.append(
                "the manifest is signed (HMAC) but ACCESS_LEDGER_SEAL_KEY is not set: signature not checked"
            )
        elif not hmac.compare_digest(
            str(signature.get("mac", "")), hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()
        ):
            check.changed.append(MANIFEST)
            check.notes.append("the manifest's signature does not match (manifest edited, or another key)")
        else:
            check.notes.append("manifest signature matches")
            signer = "the holder of ACCESS_LEDGER_SEAL_KEY"
    check.ok = not (check.changed or check.missing or check.added or check.problems)
    if check.ok:
        with BundleReader(target) as bundle:
            scope = scope_problems(manifest, lambda name: bundle.read(name, int(listed[name]["bytes"])))
        check.problems, notes = check_anchors(target, manifest, verify=verify_bundle, **anchors)
        check.problems[:0] = scope
        check.notes += notes
        check.ok = not check.problems
        if anchors.get("public_key") is not None and check.ok:
            signer = f"the signer of manifest.json ({anchors['public_key']})"
    if recompute and check.ok:
        from reports.recompute import recompute as recompute_bundle

        check.problems, notes = recompute_bundle(target, manifest, progress)
        check.notes += notes
        check.ok = not check.problems
    elif recompute:
        check.notes.append("not recomputed: the bundle fails the checks above")
    elif check.ok:
        check.notes += vouching(manifest, signer, "access-ledger evidence verify --recompute")
    return check


def _parse_manifest(target: Path, raw: bytes) -> dict[str, Any]:
    """The manifest, every field verify reads of the type it must have; else one BundleProblem naming it."""
    from reports.check_bundle import RepeatedKey, load_manifest, printable

    try:
        manifest = load_manifest(raw)
    except RepeatedKey as exc:
        raise BundleProblem(f"{target}: {MANIFEST} gives the key {printable(str(exc))!r} twice") from None
    except (ValueError, RecursionError):
        raise BundleProblem(f"{target}: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleProblem(f"{target}: {MANIFEST} is not an evidence manifest ({FORMAT})")
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise BundleProblem(f'{target}: {MANIFEST}: "files" is not an object of file entries')
    for name, entry in listed.items():
        why = check_name(name)
        if why or name == MANIFEST:
            raise BundleProblem(f"{MANIFEST}: file entry {name!r} is {why or 'the manifest itself'}")
        if not isinstance(entry, dict):
            raise BundleProblem(f"{MANIFEST}: file entry {name!r} is not an object")
        sha, size = entry.get("sha256"), entry.get("bytes")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise BundleProblem(f'{MANIFEST}: file entry {name!r}: "sha256" is not 64 lowercase hex digits')
        if not (isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 1 << 53):
            raise BundleProblem(f'{MANIFEST}: file entry {name!r}: "bytes" is not a size in bytes')
    for key in ("period", "ledger", "audits", "charts", "reviews", "tool", "checker"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise BundleProblem(f'{MANIFEST}: "{key}" is not an object')
    if "signature" in manifest and not isinstance(manifest["signature"], dict):
        raise BundleProblem(f'{MANIFEST}: "signature" is not an object')
    return manifest


def _naive(text: str) -> datetime:
    """A canonical instant as the naive UTC datetime DuckDB's TIMESTAMP columns hold."""
    from ledger.timeutil import parse_instant

    return parse_instant(text).astimezone(UTC).replace(tzinfo=None)
