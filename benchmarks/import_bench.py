"""Import throughput against a plain eventsourcing baseline, and one change command end to end.

    python benchmarks/import_bench.py --events 1000000

Prints: the import rate on SQLite (events/s), the rate of eventsourcing saving the same number
of trivial events in batches of 1000 (the baseline), their ratio, and the wall time of
`access-ledger role assign ...` run as a fresh process (median of several runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import write_history


def baseline(n: int, folder: Path) -> float:
    """eventsourcing on SQLite saving n trivial events, 1000 aggregates per save()."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Thing(Aggregate):
        @event("Created")
        def __init__(self, name: str):
            self.name = name

    os.environ.update(PERSISTENCE_MODULE="eventsourcing.sqlite", SQLITE_DBNAME=str(folder / "baseline.db"))
    app = Application()
    start = time.perf_counter()
    for i in range(0, n, 1000):
        app.save(*(Thing(name=f"t{j}") for j in range(i, min(n, i + 1000))))
    elapsed = time.perf_counter() - start
    for key in ("PERSISTENCE_MODULE", "SQLITE_DBNAME"):
        os.environ.pop(key)
    return n / elapsed


def change_command_ms(folder: Path, runs: int = 7) -> float:
    """Median wall time of `access-ledger role assign` as a fresh process on a 100k-event ledger."""
    exe = Path(sys.executable).parent / "access-ledger"
    db = folder / "import.db"
    times = []
    for i in range(runs):
        args = [str(exe), "--db", str(db), "role", "assign", "viewer", "--to", f"user:user-{i}", "--tenant",
                "tenant-0", "--resource", f"model/bench-{i}", "--reason", "BENCH"]
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        times.append((time.perf_counter() - start) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"change command failed: {done.stderr.strip()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=None, help="parser processes (default: cores - 1)")
    args = parser.parse_args()

    from ledger.app import AccessLedger
    from ledger.pipeline import default_workers

    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "history.jsonl"
        lines = write_history(str(source), args.events)
        led = AccessLedger.open(str(folder / "import.db"), create=True)
        start = time.perf_counter()
        with open(source, "rb") as f:
            result = led.import_lines((line.rstrip(b"\n") for line in f), workers=workers)
        elapsed = time.perf_counter() - start
        import resource

        peak_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert result.written == lines, (result, lines)
        rate = result.written / elapsed
        led.close()
        base = baseline(result.written, folder)
        cmd_ms = change_command_ms(folder)
        print(f"events imported:        {result.written:,} ({source.stat().st_size / 1e6:.0f} MB JSONL, "
              f"{workers} parser process(es))")
        print(f"import rate (SQLite):   {rate:,.0f} events/s  ({elapsed:.1f} s)   target >= 50,000")
        print(f"peak memory (importer): {peak_main:.0f} MB (the file is streamed; compare runs of different "
              "--events)")
        print(f"eventsourcing baseline: {base:,.0f} events/s  (trivial events, save() of 1000 aggregates)")
        print(f"ratio import/baseline:  {rate / base:.2f}x   target about 3x")
        print(f"change command (role assign, fresh process, median of 7): {cmd_ms:.0f} ms   target <= 250 ms")


if __name__ == "__main__":
    main()
