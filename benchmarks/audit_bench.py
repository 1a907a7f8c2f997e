"""The DuckDB warehouse and the audits on a large ledger.

    python benchmarks/audit_bench.py --events 10000000

Builds (through the bulk import, as `access-ledger import` does) access_ledger.demo.generator's year of a large
platform: 10,000 users, 500 tenants, 200 custom roles, about 100,000 role assignments; the rest
are resource accesses and connector-secret reads. Then prints:
  - sync: events/s of a full sync into a new warehouse file (target >= 200,000/s), the file's size;
  - the seconds of each audit (target <= 2 s each): review, least-privilege (--window 90d), sod and
    hygiene at the newest event; secrets and changes over the last 90 days of the log;
  - the seconds to open the warehouse again and prove it (the SHA-256 of its file, every audit's first step);
  - the seconds of an audit's own catch-up sync after 1,000 new events (when the script built the ledger),
    which records the file's new SHA-256.
`--ledger PATH` keeps the ledger there (and reuses it when it exists, skipping the build).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--ledger", type=Path, help="keep the ledger here (reused if it exists)")
    args = parser.parse_args()

    from scale import generated_ledger

    from ledger.app import AccessLedger
    from reports.audits import AUDITS, run_audit
    from reports.warehouse import Warehouse

    with tempfile.TemporaryDirectory() as tmp:
        path = args.ledger or Path(tmp) / "ledger.db"
        built = not path.exists()
        generated_ledger(str(path), args.events)
        led = AccessLedger.open(str(path))

        wh_path = Path(tmp) / "warehouse.duckdb"
        wh = Warehouse.open(led, wh_path)
        start = time.perf_counter()
        synced = wh.sync()
        took = time.perf_counter() - start
        print(f"sync:   {synced:,} events in {took:.1f} s = {synced / took:,.0f} events/s   target >= 200,000/s")
        print(f"        warehouse file: {_size(wh_path)} ({os.path.getsize(wh_path) / synced:.0f} bytes/event)")
        usage, changes = wh.con.execute(
            "SELECT count(*) FILTER (WHERE type IN ('ResourceAccessed', 'ConnectorSecretAccessed')), "
            "count(*) FILTER (WHERE type NOT IN ('ResourceAccessed', 'ConnectorSecretAccessed')) FROM events"
        ).fetchall()[0]
        print(f"        {usage:,} access events ({usage / max(1, synced):.1%}), {changes:,} change events")

        newest = datetime.fromisoformat(led.newest_at())
        at = newest.strftime("%Y-%m-%dT%H:%M:%SZ")
        quarter = (newest - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {
            "review": {"at": at},
            "least-privilege": {"at": at, "window": "90d"},
            "secrets": {"start": quarter, "end": at},
            "sod": {"at": at},
            "changes": {"start": quarter, "end": at},
            "hygiene": {"at": at},
        }
        for name in AUDITS:
            start = time.perf_counter()
            result = run_audit(wh, name, sync=False, **params[name])
            took = time.perf_counter() - start
            shown = ", ".join(f"{k}={v}" for k, v in params[name].items())
            print(f"audit {name:<16} {took:6.2f} s  {result.table.num_rows:>10,} rows   target <= 2 s   ({shown})")

        # What every audit pays first: the warehouse file opened again and proven to be the bytes the
        # ledger recorded after the sync (its SHA-256, see reports/warehouse.py).
        wh.close()
        start = time.perf_counter()
        wh = Warehouse.open(led, wh_path)
        wh.confirm()
        took = time.perf_counter() - start
        assert wh.proven is not None and wh.rebuilt is None
        print(f"open + proof of the warehouse alone: {took:.2f} s (SHA-256 of {_size(wh_path)})")
        wh.close()
        start = time.perf_counter()
        wh = Warehouse.open(led, wh_path)
        result = run_audit(wh, "review", sync=False, **params["review"])
        took = time.perf_counter() - start
        print(
            f"open + proof + audit review, as `access-ledger audit review` runs them: {took:.2f} s "
            f"({result.table.num_rows:,} rows; the file is hashed while the query runs)   target <= 2 s"
        )

        if built:
            led.import_lines(_tail(led, 1000))
            start = time.perf_counter()
            n = wh.sync()
            print(f"catch-up sync of {n:,} new events before an audit: {time.perf_counter() - start:.2f} s")
        wh.close()
        led.close()


def _tail(led, n: int):
    import orjson

    at = led.newest_at()
    principal = "user:" + led.entities("user")[0]["name"]
    tenant = led.entities("tenant")[0]["name"]
    for _ in range(n):
        yield orjson.dumps(
            {
                "type": "ResourceAccessed",
                "at": at,
                "actor": "system",
                "principal": principal,
                "tenant": tenant,
                "resource": "model/m",
                "action": "read",
                "outcome": "allowed",
            }
        )


def _size(path: Path) -> str:
    size = os.path.getsize(path)
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


if __name__ == "__main__":
    main()
