"""Evidence export of a year of a large platform.

    python benchmarks/evidence_bench.py --events 10000000 [--db /tmp/evidence-10m.db] [--zip]

Builds (through the bulk import; skipped when --db names a ledger that already has events) a
year of 10,000 users in 500 tenants, 200 roles, ~100k assignments, the rest resource and
connector-secret accesses, from access_ledger.demo.generator. Then times `access-ledger evidence export` of
the whole year as a fresh process twice: first with no cached warehouse, then again with the cached
warehouse synced (the usual case: the audits keep it synced). The export of this version reads no
cached warehouse (it fills its own, in memory, from its verifying walk's lines), so the two differ
only by the page cache; an earlier version's export read the cached one, synced first.
Prints each stage's time as the export reports it, the bundle's size, and `evidence verify`.

With --parts it then measures each part of the export alone, one after another in a fresh process
(the warehouse synced): the log walk (verify and events.jsonl, the export's worker process), the
export's own warehouse filled from the walk's lines, the Parquet file, every audit's query and its CSV, Parquet and JSON files, the charts and the hashing.
For each it prints the wall time and the CPU time (user + system, all threads). The sum of the CPU times, divided
by the cores, is the least wall time the export can take on this machine, however its parts overlap.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import generated_ledger  # noqa: E402


def export(db: Path, out: Path, as_zip: bool, label: str) -> float:
    """Run the CLI export as a fresh process; print its stages; return the wall time."""
    script = (
        "import sys, time\n"
        "from ledger.app import AccessLedger\n"
        "from reports.evidence import export_bundle\n"
        "t0 = time.perf_counter(); marks = []\n"
        "def report(what, done): marks.append((what, time.perf_counter() - t0))\n"
        "with AccessLedger.open(sys.argv[1]) as led:\n"
        "    r = export_bundle(led, sys.argv[2], as_zip=sys.argv[3] == '1', progress=report, command='bench')\n"
        "prev = 0.0\n"
        "for what, at in marks:\n"
        "    print(f'    {at:6.1f} s  {what}')\n"
        'print(f\'    events {r.events:,}, verify ok {r.manifest["ledger"]["verify"]["ok"]}\')\n'
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(db), str(out), "1" if as_zip else "0"], check=True)
    wall = time.perf_counter() - start
    size = out.stat().st_size if out.is_file() else sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"  {label}: {wall:.1f} s end to end (fresh process), bundle {size / 1e9:.2f} GB   target <= 45 s warm")
    return wall


def _remove(path: Path) -> None:
    """Delete a bundle: a folder or a zip file."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink()


def measure_parts(db: Path, out: Path) -> None:
    """Each part of the export of the whole history, alone, in this process: wall and CPU seconds."""
    from ledger.app import AccessLedger
    from ledger.timeutil import format_instant, now
    from reports import evidence
    from reports.audits import AUDITS, run_audit

    rows: list[tuple[str, float, float]] = []

    def used() -> float:  # CPU seconds of this process and of the worker processes it has waited for
        return sum(
            u.ru_utime + u.ru_stime
            for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        )

    def part(label: str, work: Callable[[], Any]) -> Any:
        before, start = used(), time.perf_counter()
        value = work()
        cpu = used() - before
        rows.append((label, time.perf_counter() - start, cpu))
        print(f"    {label:<44} wall {rows[-1][1]:5.1f} s   cpu {cpu:5.1f} s", flush=True)
        return value

    for sub in ("events", "audits", "charts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with AccessLedger.open(str(db)) as led:
        first, last = 1, led.head()
        start, end = led.time_of(first), format_instant(now().replace(microsecond=0))  # as the export does
        log_pass = part(
            "log walk: verify + events.jsonl",
            lambda: evidence._verify_and_write(led.store.url, out / "events" / "events.jsonl", first, last, led),
        )
        wh = part(
            "own warehouse, from the walk's lines", lambda: evidence._own_warehouse(led, out, first, last, log_pass)
        )
        try:
            part(
                "events.parquet",
                lambda: evidence._write_events_parquet(wh, first, last, out / "events" / "events.parquet"),
            )
            results = {}
            for name in AUDITS:
                results[name] = part(
                    f"audit {name}: query",
                    lambda name=name: run_audit(wh, name, at=end, start=start, end=end, sync=False),
                )
                part(
                    f"audit {name}: csv + parquet + json",
                    lambda name=name: evidence._write_audit(wh, results[name], out),
                )
            part("charts", lambda: evidence._charts(wh, results["secrets"], start, end, first, last, out))
        finally:
            wh.close()
    part(
        "hashing (all but the jsonl)",
        lambda: [evidence._hash_entry(p) for rel, p in evidence._bundle_files(out) if rel != "events/events.jsonl"],
    )
    cpu = sum(r[2] for r in rows)
    cores = os.cpu_count() or 1
    print(
        f"  parts alone: {sum(r[1] for r in rows):.1f} s wall one after another, {cpu:.1f} s of CPU; "
        f"on {cores} cores the export takes at least {cpu / cores:.1f} s   target <= 45 s warm"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--db", type=Path, help="keep the ledger here (and reuse it next time)")
    parser.add_argument("--zip", action="store_true", help="write a zip file instead of a folder")
    parser.add_argument("--parts", action="store_true", help="then measure each part of the export alone")
    parser.add_argument("--measure-parts", type=Path, help=argparse.SUPPRESS)  # the fresh process of --parts
    args = parser.parse_args()
    if args.measure_parts:
        measure_parts(args.db, args.measure_parts)
        return

    tmp = Path(tempfile.mkdtemp(prefix="evidence-bench-"))
    try:
        db = args.db or tmp / "ledger.db"
        generated_ledger(str(db), args.events)
        warehouse = Path(str(db) + ".duckdb")
        for suffix in ("", ".wal"):
            if Path(str(warehouse) + suffix).exists():
                os.remove(str(warehouse) + suffix)
        out = tmp / ("cold.zip" if args.zip else "cold")
        print("evidence export, no warehouse yet:")
        export(db, out, args.zip, "cold")
        _remove(out)
        print("evidence export, warehouse already synced:")
        out = tmp / ("warm.zip" if args.zip else "warm")
        export(db, out, args.zip, "warm")
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "from access_ledger.cli import main; main()", "evidence", "verify", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"evidence verify of the bundle: {time.perf_counter() - start:.1f} s")
        if args.parts:
            _remove(out)
            print("each part of the export alone (fresh process, warehouse synced):")
            subprocess.run(
                [sys.executable, __file__, "--db", str(db), "--measure-parts", str(tmp / "parts")], check=True
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
