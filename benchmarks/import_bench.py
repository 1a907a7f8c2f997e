"""Import throughput against a plain eventsourcing baseline, and one change command end to end.

    python benchmarks/import_bench.py --events 1000000
    python benchmarks/import_bench.py --events 1000000 --pg postgresql://user@host:5432/db

Prints: the import rate on SQLite (events/s), the rate of eventsourcing saving the same number
of trivial events in batches of 1000 (the baseline), their ratio, and the wall time of
`access-ledger role assign ...` run as a fresh process (median of several runs).

With --pg, every event of the file carries an idempotency id, and the script also imports it into
an empty PostgreSQL ledger (a schema of its own, dropped afterwards) and, on both backends, into a
ledger that already holds the file's first half: the re-run of an interrupted import, which looks
up every id and skips the events already recorded.
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
from typing import Any

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
        args = [
            str(exe),
            "--db",
            str(db),
            "role",
            "assign",
            "viewer",
            "--to",
            f"user:user-{i}",
            "--tenant",
            "tenant-0",
            "--resource",
            f"model/bench-{i}",
            "--reason",
            "BENCH",
            "--actor",
            "system",
        ]
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        times.append((time.perf_counter() - start) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"change command failed: {done.stderr.strip()}")
    return statistics.median(times)


def timed_import(url: str, source: Path, workers: int, *, prefix: Path | None = None) -> tuple[Any, float]:
    """Import `source` into a new ledger at `url` (first `prefix`, untimed); return (result, seconds)."""
    from ledger.app import AccessLedger

    with AccessLedger.open(url, create=True) as led:
        if prefix is not None:
            with open(prefix, "rb") as f:
                led.import_lines((line.rstrip(b"\n") for line in f), workers=workers)
        start = time.perf_counter()
        with open(source, "rb") as f:
            result = led.import_lines((line.rstrip(b"\n") for line in f), workers=workers)
        return result, time.perf_counter() - start


def pg_schema_url(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    base = url.split("?", 1)[0]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=None, help="parser processes (default: cores - 1)")
    parser.add_argument(
        "--pg",
        metavar="URL",
        default=None,
        help="also import into PostgreSQL at this URL (postgresql://user@host:port/db)",
    )
    args = parser.parse_args()

    from ledger.pipeline import default_workers

    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "history.jsonl"
        lines = write_history(str(source), args.events, ids=args.pg is not None)
        result, elapsed = timed_import(str(folder / "import.db"), source, workers)
        import resource

        peak_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert result.written == lines, (result, lines)
        rate = result.written / elapsed
        print(
            f"events imported:        {result.written:,} ({source.stat().st_size / 1e6:.0f} MB JSONL, "
            f"{workers} parser process(es){', every event with an id' if args.pg else ''})"
        )
        print(f"import rate (SQLite):   {rate:,.0f} events/s  ({elapsed:.1f} s)   target >= 50,000", flush=True)
        if args.pg:
            half = folder / "first-half.jsonl"
            with open(source, "rb") as f, open(half, "wb") as out:
                for i, line in enumerate(f):
                    if i >= lines // 2:
                        break
                    out.write(line)
            again, took = timed_import(str(folder / "rerun.db"), source, workers, prefix=half)
            assert (again.written, again.skipped) == (lines - lines // 2, lines // 2), again
            sqlite_rerun = lines / took
            print(
                f"re-run (SQLite):        {sqlite_rerun:,.0f} events/s  ({took:.1f} s: {again.skipped:,} "
                f"skipped by id, {again.written:,} written)",
                flush=True,
            )
            tag = f"bench_{os.getpid()}"
            try:
                pg_result, pg_took = timed_import(pg_schema_url(args.pg, tag + "_a"), source, workers)
                assert pg_result.written == lines, pg_result
                pg_rate = lines / pg_took
                print(
                    f"import rate (PostgreSQL): {pg_rate:,.0f} events/s  ({pg_took:.1f} s)   target >= 50,000; "
                    f"{pg_rate / rate:.2f}x the SQLite rate",
                    flush=True,
                )
                drop_schema(args.pg, tag + "_a")
                pg_again, pg_again_took = timed_import(pg_schema_url(args.pg, tag + "_b"), source, workers, prefix=half)
                assert (pg_again.written, pg_again.skipped) == (lines - lines // 2, lines // 2), pg_again
                pg_rerun = lines / pg_again_took
                print(
                    f"re-run (PostgreSQL):    {pg_rerun:,.0f} events/s  ({pg_again_took:.1f} s: "
                    f"{pg_again.skipped:,} skipped by id, {pg_again.written:,} written); "
                    f"{pg_rerun / sqlite_rerun:.2f}x the SQLite re-run",
                    flush=True,
                )
            finally:
                drop_schema(args.pg, tag + "_a")
                drop_schema(args.pg, tag + "_b")
        base = baseline(result.written, folder)
        cmd_ms = change_command_ms(folder)
        print(f"peak memory (importer): {peak_main:.0f} MB (the file is streamed; compare runs of different --events)")
        print(f"eventsourcing baseline: {base:,.0f} events/s  (trivial events, save() of 1000 aggregates)")
        print(f"ratio import/baseline:  {rate / base:.2f}x   target about 3x")
        print(f"change command (role assign, fresh process, median of 7): {cmd_ms:.0f} ms   target <= 250 ms")


if __name__ == "__main__":
    main()
