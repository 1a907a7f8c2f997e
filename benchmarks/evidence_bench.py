"""Evidence export of a year of a large platform.

    python benchmarks/evidence_bench.py --events 10000000 [--db /tmp/evidence-10m.db] [--zip]

Builds (through the bulk import; skipped when --db names a ledger that already has events) a
year of 10,000 users in 500 tenants, 200 roles, ~100k assignments, the rest resource and
connector-secret accesses, from ledger.generator. Then times `access-ledger evidence export` of
the whole year as a fresh process twice: first with no warehouse (the first sync of DuckDB is
part of it), then again with the warehouse synced (the usual case: the audits keep it synced).
Prints each stage's time as the export reports it, the bundle's size, and `evidence verify`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
        "print(f'    events {r.events:,}, verify ok {r.manifest[\"ledger\"][\"verify\"][\"ok\"]}')\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(db), str(out), "1" if as_zip else "0"], check=True)
    wall = time.perf_counter() - start
    size = out.stat().st_size if out.is_file() else sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"  {label}: {wall:.1f} s end to end (fresh process), bundle {size / 1e9:.2f} GB   target <= 30 s")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--db", type=Path, help="keep the ledger here (and reuse it next time)")
    parser.add_argument("--zip", action="store_true", help="write a zip file instead of a folder")
    args = parser.parse_args()

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
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink()
        print("evidence export, warehouse already synced:")
        out = tmp / ("warm.zip" if args.zip else "warm")
        export(db, out, args.zip, "warm")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from ledger.cli import main; main()", "evidence", "verify", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"evidence verify of the bundle: {time.perf_counter() - start:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
