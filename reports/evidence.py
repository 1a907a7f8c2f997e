"""Evidence bundles (DESIGN section 7): a folder or zip an auditor keeps, re-checks and reads.

    manifest.json          what is in the bundle and how it was made: the SHA-256 of every other file,
                           the period, the ledger digest and verify result at export time, the SQL of
                           every query, the tool version, the generation time and the command line
    digest.json            the ledger digest alone (`access-ledger verify --digest digest.json`)
    report.html            the report: self-contained, offline, charts and sortable tables
    events/events.jsonl    the period's events in the interchange format (importable as is)
    events/events.parquet  the same events as a table, one column per field, with positions
    audits/NAME.csv|json   every audit of the period, every row
    charts/NAME.csv        the figures behind each chart

The events are cut at the ledger's head when the export starts, so the JSONL, the Parquet file
and the audits describe the same log even if it grows meanwhile. The JSONL file and the full
verify are written by worker processes while DuckDB does the rest (each is a single-threaded
pass over the whole log).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from reports.errors import ReportError

if TYPE_CHECKING:
    import pyarrow as pa

    from ledger.app import AccessLedger
    from reports.audits import AuditResult
    from reports.warehouse import Warehouse

FORMAT = "access-ledger-evidence/1"
MANIFEST = "manifest.json"
HASH_CHUNK = 1 << 20
#: Which rows of each audit are findings to act on (the rest is the review material around them).
ATTENTION: dict[str, frozenset[str] | None] = {
    "review": frozenset(),
    "least-privilege": frozenset({"dormant-principal"}),
    "secrets": frozenset({"unauthorised-access", "denied-although-authorised"}),
    "sod": None,  # every row: a principal holding both sides of a rule
    "changes": frozenset(),
    "hygiene": frozenset({"self-grant", "grant-to-deactivated", "expired-not-revoked", "role-without-holders",
                          "empty-team", "change-without-reason"}),
}
Progress = Callable[[str, float], None]  # (what is being done, fraction of the export done)


class BundleError(ReportError):
    """An evidence bundle cannot be written or read (not a bundle, no manifest, folder not empty)."""


def needs_attention(audit: str, row: dict[str, Any]) -> bool:
    """True if this audit row is a finding someone must act on (not review material)."""
    kinds = ATTENTION.get(audit, frozenset())
    return True if kinds is None else row.get("finding") in kinds


def attention_filter(audit: str) -> str:
    """The same as needs_attention, as a SQL predicate over the audit's rows."""
    kinds = ATTENTION.get(audit, frozenset())
    if kinds is None:
        return "TRUE"
    if not kinds:
        return "FALSE"
    return "finding IN (" + ", ".join(f"'{k}'" for k in sorted(kinds)) + ")"


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
    manifest_sha256: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.path), "ok": self.ok, "files_checked": self.checked, "changed": self.changed,
                "missing": self.missing, "added": self.added, "notes": self.notes,
                "manifest_sha256": self.manifest_sha256}


# -- export ------------------------------------------------------------------------------------

def export_bundle(led: AccessLedger, out: str | Path, *, start: str | None = None, end: str | None = None,
                  as_zip: bool = False, command: str | None = None, warehouse: Warehouse | None = None,
                  window: str = "90d", rules: str | Path | None = None, progress: Progress | None = None,
                  replace: bool = False) -> ExportResult:
    """Write the evidence bundle of the period [start, end] (default: all of history up to now) to `out`.

    `out` is a folder (created; it must not exist or be empty unless `replace`), or with `as_zip`
    a zip file (`.zip` is added to the name if missing).
    """
    from ledger.timeutil import canonical, format_instant, now

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
    target = Path(out)
    if as_zip and target.suffix != ".zip":
        target = target.with_name(target.name + ".zip")
    folder = _prepare(target, as_zip, replace)
    try:
        manifest, findings = _write_bundle(led, folder, start_at, end_at, first, last, head, generated_at, command,
                                           warehouse, window, rules, report)
        report("manifest", 0.97)
        data = json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
        (folder / MANIFEST).write_bytes(data)
        if as_zip:
            report("zip", 0.98)
            _zip(folder, target)
    finally:
        if as_zip:
            shutil.rmtree(folder, ignore_errors=True)
    report("done", 1.0)
    return ExportResult(target, manifest, time.perf_counter() - started, hashlib.sha256(data).hexdigest(), findings)


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
    return target


def _write_bundle(led: AccessLedger, folder: Path, start_at: str, end_at: str, first: int, last: int, head: int,
                  generated_at: str, command: str | None, warehouse: Warehouse | None, window: str,
                  rules: str | Path | None, report: Progress
                  ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    from importlib.metadata import version

    from reports.audits import AUDITS, run_audit
    from reports.html import render_report
    from reports.warehouse import Warehouse

    for sub in ("events", "audits", "charts"):
        (folder / sub).mkdir(exist_ok=True)
    jsonl = folder / "events" / "events.jsonl"
    # The two single-threaded passes over the whole log run in worker processes meanwhile.
    pool, jsonl_job, verify_job = _start_workers(led, jsonl, first, last)
    try:
        digest = led.digest()
        (folder / "digest.json").write_text(json.dumps(digest, indent=2) + "\n", encoding="utf-8")
        wh = warehouse or Warehouse.open(led)
        try:
            report("warehouse sync", 0.05)
            wh.sync()
            report("events.parquet", 0.2)
            _copy(wh, f"SELECT * FROM events WHERE position BETWEEN {int(first)} AND {int(last)} ORDER BY position",
                  folder / "events" / "events.parquet", "parquet")
            results: dict[str, AuditResult] = {}
            audits_meta: dict[str, Any] = {}
            for i, name in enumerate(AUDITS):
                report(f"audit {name}", 0.3 + 0.4 * i / len(AUDITS))
                result = run_audit(wh, name, at=end_at, start=start_at, end=end_at, window=window, rules=rules,
                                   sync=False)
                results[name] = result
                files = [f"audits/{name}.csv", f"audits/{name}.json"]
                attention = _write_audit(wh, result, folder)
                audits_meta[name] = {"title": result.title, "description": result.description,
                                     "params": result.params, "columns": result.columns, "rows": len(result),
                                     "needs_attention": attention, "files": files, "sql": result.sql}
            report("charts", 0.72)
            charts = _charts(wh, results.get("secrets"), start_at, end_at, first, last, folder)
            organization = _organization(wh)
            report("report.html", 0.8)
            verified = verify_job.result() if verify_job is not None else led.verify().as_dict()
            context = {"organization": organization, "period": {"from": start_at, "to": end_at},
                       "generated_at": generated_at, "version": version("access-ledger"), "head": head,
                       "digest": digest, "verify": verified, "events": last - first + 1 if last >= first else 0}
            html = render_report(context, results, charts, {n: m["needs_attention"] for n, m in audits_meta.items()})
            findings = {name: split_rows(r, 1000, 0)[0] for name, r in results.items()}
            (folder / "report.html").write_text(html, encoding="utf-8")
        finally:
            if warehouse is None:
                wh.close()
        report("events.jsonl", 0.9)
        jsonl_hash = jsonl_job.result() if jsonl_job is not None else _write_jsonl(led.store.url, jsonl, first,
                                                                                   last, led)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report("hashing", 0.93)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST:
            continue
        files[rel] = {"sha256": jsonl_hash["sha256"] if rel == "events/events.jsonl" else _sha256_file(path),
                      "bytes": path.stat().st_size}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "tool": {"name": "access-ledger", "version": version("access-ledger")},
        "generated_at": generated_at,
        "command": command if command is not None else " ".join(_quote(a) for a in [Path(sys.argv[0]).name,
                                                                                      *sys.argv[1:]]),
        "period": {"from": start_at, "to": end_at, "first_position": first, "last_position": last,
                   "events": max(0, last - first + 1)},
        "ledger": {"location": led.store.label, "organization": organization.get("name"),
                   "preset": organization.get("preset"), "head": head, "digest": digest, "verify": verified},
        "audits": audits_meta,
        "charts": {name: {"title": c["title"], "file": f"charts/{name}.csv", "sql": c["sql"]}
                   for name, c in charts.items()},
        "files": files,
    }
    return _sign(manifest), findings


def split_rows(result: AuditResult, attention_cap: int, other_cap: int
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first rows needing attention and the first other rows of an audit, as plain dicts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = result.table
    kinds = ATTENTION.get(result.name, frozenset())
    if kinds is None:
        att, rest = table, table.slice(0, 0)
    elif kinds and "finding" in result.columns:
        mask = pc.fill_null(pc.is_in(table.column("finding"), value_set=pa.array(sorted(kinds))), False)
        att, rest = table.filter(mask), table.filter(pc.invert(mask))
    else:
        att, rest = table.slice(0, 0), table

    def rows(t: pa.Table, n: int) -> list[dict[str, Any]]:
        return [{k: plain(v) for k, v in r.items()} for r in t.slice(0, n).to_pylist()] if n else []
    return rows(att, attention_cap), rows(rest, other_cap)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _start_workers(led: AccessLedger, jsonl: Path, first: int, last: int
                   ) -> tuple[ProcessPoolExecutor | None, Future[dict[str, Any]] | None, Future[dict[str, Any]] | None]:
    url = led.store.url
    if url == ":memory:" or url.startswith("file:") or last - first < 50_000:
        return None, None, None  # small or in-memory: in this process, no start-up cost
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    return pool, pool.submit(_write_jsonl, url, jsonl, first, last), pool.submit(_verify, url)


def _verify(url: str) -> dict[str, Any]:
    from ledger.app import AccessLedger

    with AccessLedger.open(url) as led:
        return led.verify(workers=1).as_dict()  # the export's other work has the other cores


def _write_jsonl(url: str, path: Path, first: int, last: int, led: AccessLedger | None = None) -> dict[str, Any]:
    """Write positions first..last as JSONL (the ledger's canonical bytes); return its SHA-256 and size."""
    from ledger.app import AccessLedger

    own = led is None
    led = led or AccessLedger.open(url)
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as f:
            if last >= first:
                buf: list[bytes] = []
                for _, state in led.read_bytes(first, last):
                    buf.append(state)
                    if len(buf) >= 20_000:
                        size += _flush_lines(f, h, buf)
                        buf = []
                size += _flush_lines(f, h, buf)
    finally:
        if own:
            led.close()
    return {"sha256": h.hexdigest(), "bytes": size}


def _flush_lines(f: Any, h: Any, buf: list[bytes]) -> int:
    if not buf:
        return 0
    data = b"\n".join(buf) + b"\n"
    h.update(data)
    f.write(data)
    return len(data)


def _copy(wh: Warehouse, select: str, path: Path, fmt: str) -> None:
    """COPY a query's rows to a file (parquet, csv or json); times as canonical UTC text in csv and json."""
    target = str(path).replace("'", "''")
    options = {"parquet": "FORMAT parquet, COMPRESSION zstd", "csv": "FORMAT csv, HEADER true",
               "json": "FORMAT json, ARRAY true"}[fmt]
    wh.con.execute(f"COPY ({select}) TO '{target}' ({options})")


def _select_plain(table: pa.Table, name: str) -> str:
    """A SELECT over a registered Arrow table that turns timestamps into canonical UTC text."""
    import pyarrow as pa

    cols = []
    for f in table.schema:
        q = '"' + f.name.replace('"', '""') + '"'
        if pa.types.is_timestamp(f.type):
            cols.append(f"CASE WHEN microsecond({q}) % 1000000 = 0 THEN strftime({q}, '%Y-%m-%dT%H:%M:%SZ') "
                        f"ELSE strftime({q}, '%Y-%m-%dT%H:%M:%S.%fZ') END AS {q}")
        else:
            cols.append(q)
    return f"SELECT {', '.join(cols) or '*'} FROM {name}"


def _write_audit(wh: Warehouse, result: AuditResult, folder: Path) -> int:
    """Write one audit as CSV and JSON; return how many of its rows need attention."""
    view = f"evidence_{result.name.replace('-', '_')}"
    wh.con.register(view, result.table)
    try:
        select = _select_plain(result.table, view)
        _copy(wh, select, folder / "audits" / f"{result.name}.csv", "csv")
        _copy(wh, select, folder / "audits" / f"{result.name}.json", "json")
        if "finding" not in result.columns and ATTENTION.get(result.name) is not None:
            return 0
        return int(wh.con.execute(f"SELECT count(*) FROM {view} WHERE {attention_filter(result.name)}").fetchall()[0][0])
    finally:
        wh.con.unregister(view)


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


def _charts(wh: Warehouse, secrets: AuditResult | None, start_at: str, end_at: str, first: int, last: int,
            folder: Path) -> dict[str, dict[str, Any]]:
    """The figures behind the report's three charts, each also written as charts/NAME.csv."""
    import duckdb

    statements = _chart_sql()
    params = {"start": _naive(start_at), "end": _naive(end_at), "first": first, "last": last}
    if secrets is not None:
        wh.con.register("secrets_audit", secrets.table)
    else:
        wh.con.execute("CREATE OR REPLACE TEMP VIEW secrets_audit AS SELECT NULL::VARCHAR AS finding, "
                       "NULL::TIMESTAMP AS since, NULL::VARCHAR AS who, NULL::VARCHAR AS connector, "
                       "NULL::VARCHAR AS tenant WHERE FALSE")
    try:
        charts = {}
        for name, sql in statements.items():
            statement = duckdb.extract_statements(sql)[-1]
            used = {k: v for k, v in params.items() if k in statement.named_parameters}
            table = wh.con.sql(statement.query, params=used).to_arrow_table()
            wh.con.register("evidence_chart", table)
            try:
                _copy(wh, _select_plain(table, "evidence_chart"), folder / "charts" / f"{name}.csv", "csv")
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
        manifest["signature"] = {"algorithm": "HMAC-SHA256", "key": "ACCESS_LEDGER_SEAL_KEY",
                                 "mac": hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()}
    return manifest


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _zip(folder: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as z:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            # Parquet is compressed already: stored as is, it zips in no time.
            kind = zipfile.ZIP_STORED if rel.endswith(".parquet") else zipfile.ZIP_DEFLATED
            z.write(path, rel, compress_type=kind)
    os.replace(partial, target)


# -- verify ------------------------------------------------------------------------------------

def verify_bundle(path: str | Path) -> BundleCheck:
    """Re-hash every file of a bundle (folder or zip) against its manifest: changed, missing, added."""
    from ledger.integrity import seal_key

    target = Path(path)
    if not target.exists():
        raise BundleError(f"no bundle at {target}")
    with _Bundle(target) as bundle:
        raw = bundle.read(MANIFEST)
        if raw is None:
            raise BundleError(f"{target} has no {MANIFEST}: it is not an evidence bundle")
        try:
            manifest = json.loads(raw)
            listed = manifest["files"]
            if manifest.get("format") != FORMAT or not isinstance(listed, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise BundleError(f"{target}: {MANIFEST} is not an evidence manifest ({FORMAT})") from None
        check = BundleCheck(target, True, 0, manifest_sha256=hashlib.sha256(raw).hexdigest(), manifest=manifest)
        present = set(bundle.names()) - {MANIFEST}
        for name in sorted(listed):
            entry = listed[name]
            if name not in present:
                check.missing.append(name)
                continue
            check.checked += 1
            digest, size = bundle.sha256(name)
            if digest != entry.get("sha256") or size != entry.get("bytes"):
                check.changed.append(name)
        check.added = sorted(present - set(listed))
    signature = manifest.get("signature")
    key = seal_key()
    if signature is not None:
        if key is None:
            check.notes.append("the manifest is signed (HMAC) but ACCESS_LEDGER_SEAL_KEY is not set: signature not "
                               "checked")
        elif not hmac.compare_digest(str(signature.get("mac", "")),
                                     hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()):
            check.changed.append(MANIFEST)
            check.notes.append("the manifest's signature does not match (manifest edited, or another key)")
        else:
            check.notes.append("manifest signature matches")
    check.ok = not (check.changed or check.missing or check.added)
    return check


class _Bundle:
    """Read access to a bundle, folder or zip, by posix relative name."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError):
                raise BundleError(f"{path} is neither a bundle folder nor a zip file") from None

    def __enter__(self) -> _Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.zip is not None:
            self.zip.close()

    def names(self) -> Iterator[str]:
        if self.zip is not None:
            yield from (i.filename for i in self.zip.infolist() if not i.is_dir())
            return
        for p in self.path.rglob("*"):
            if p.is_file() or p.is_symlink():
                yield p.relative_to(self.path).as_posix()

    def _safe(self, name: str) -> Path:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise BundleError(f"{MANIFEST} names a file outside the bundle: {name!r}")
        return self.path.joinpath(*rel.parts)

    def read(self, name: str) -> bytes | None:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return self._safe(name).read_bytes()
        except (KeyError, FileNotFoundError):
            return None

    def sha256(self, name: str) -> tuple[str, int]:
        h = hashlib.sha256()
        size = 0
        with (self.zip.open(name) if self.zip is not None else open(self._safe(name), "rb")) as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return h.hexdigest(), size


def _naive(text: str) -> datetime:
    """A canonical instant as the naive UTC datetime DuckDB's TIMESTAMP columns hold."""
    from ledger.timeutil import parse_instant

    return parse_instant(text).astimezone(UTC).replace(tzinfo=None)


def plain(value: Any) -> Any:
    """A warehouse value as plain data: times as canonical UTC text."""
    if isinstance(value, datetime):
        from ledger.timeutil import format_instant

        return format_instant(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
