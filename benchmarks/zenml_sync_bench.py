"""`sync zenml` against a real ZenML 0.98 server holding 5,000 users and 500 connectors.

    ACCESS_LEDGER_TEST_ZENML=/path/to/venv-with-zenml-server python benchmarks/zenml_sync_bench.py

Starts the server (tests/zenml_server.py: a free loopback port, temp folders), creates one user and one
connector through the REST API, then clones them in the server's own SQLite database to 5,000 users
and 500 connectors (creating them through the API hashes a password per user: about an hour here),
with distinct ids, names and times. Times, end to end through the command line: the first sync
into an empty ledger (target <= 60 s), a second sync with no change (target <= 5 s), and a sync after
100 users were deactivated and 10 connectors deleted in the database. Then, in one process as the
`--interval` loop runs, a pass with no change reading everything (what every pass did before) against a
pass asking only for what changed since the previous one (what a later pass does now), alternated.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from typer.testing import CliRunner  # noqa: E402
from zenml_server import ENV, ZenMLServer  # noqa: E402

from access_ledger.cli import app  # noqa: E402
from access_ledger.zenml.client import ZenMLClient  # noqa: E402
from access_ledger.zenml.sync import Syncer  # noqa: E402
from ledger.app import AccessLedger  # noqa: E402

USERS, CONNECTORS = 5000, 500


def clone(db: Path, table: str, template: str, count: int, prefix: str) -> None:
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
    row = dict(
        zip(columns, con.execute(f'SELECT * FROM "{table}" WHERE name = ?', (template,)).fetchone(), strict=True)
    )
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=400)
    rows = []
    for n in range(count):
        when = (start + timedelta(minutes=n)).isoformat(sep=" ")
        rows.append({**row, "id": uuid.uuid4().hex, "name": f"{prefix}{n:05d}", "created": when, "updated": when})
    marks = ", ".join("?" for _ in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    con.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', [tuple(r[c] for c in columns) for r in rows])
    con.commit()
    con.close()


def timed_sync(server: ZenMLServer, ledger: str) -> tuple[float, str]:
    runner = CliRunner()
    start = time.perf_counter()
    args = ["--db", ledger, "sync", "zenml", "--url", server.url, "--password-env", "ZENML_BENCH_PASSWORD"]
    result = runner.invoke(app, args, env={"ZENML_BENCH_PASSWORD": server.password})
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return elapsed, result.output.strip()


def loop_passes(server: ZenMLServer, ledger: str, runs: int = 5) -> tuple[float, float]:
    """Median seconds of a no-change pass of one Syncer reading everything, and asking only for what changed."""
    led = AccessLedger.open(ledger)
    client = ZenMLClient(server.url)
    client.login("admin", server.password)
    try:
        syncer = Syncer(led, client, "zenml")
        syncer.once()
        full, since = [], []
        for _ in range(runs):
            syncer.snapshot = None  # what every pass did before: read every list whole
            start = time.perf_counter()
            assert syncer.once().recorded == 0
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = syncer.once()
            since.append(time.perf_counter() - start)
            assert result.recorded == 0 and not result.full_read
        return statistics.median(full), statistics.median(since)
    finally:
        client.close()
        led.close()


def main() -> None:
    venv = os.environ.get(ENV)
    if not venv:
        raise SystemExit(f"set ${ENV} to a virtual environment holding zenml[server]==0.98.0")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = ZenMLServer(venv, folder).start()
        try:
            rest = server.admin()
            rest.create_user("template-user", "pw-template-123")
            rest.create_connector("template-connector", {"env": "bench"})
            db = folder / "zenml.db"
            clone(db, "user", "template-user", USERS - 2, "user-")
            clone(db, "service_connector", "template-connector", CONNECTORS - 1, "connector-")
            ledger = str(folder / "ledger.db")
            first, line = timed_sync(server, ledger)
            print(f"first sync ({USERS:,} users, {CONNECTORS} connectors): {first:.1f} s   target <= 60 s")
            print("  " + line[:200])
            again, line = timed_sync(server, ledger)
            print(f"sync with no change: {again:.1f} s   target <= 5 s")
            print("  " + line[:200])
            full, since = loop_passes(server, ledger)
            print(
                f"--interval pass with no change (median of 5): reading everything {full:.2f} s, "
                f"asking for what changed {since:.2f} s (ratio {full / since:.1f})"
            )
            con = sqlite3.connect(db)
            con.execute(  # ZenML stamps `updated` on every change it makes: so does this one
                "UPDATE user SET active = 0, updated = ? WHERE name IN "
                "(SELECT name FROM user WHERE name LIKE 'user-%' LIMIT 100)",
                (datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" "),),
            )
            con.execute(
                "DELETE FROM service_connector WHERE name IN (SELECT name FROM service_connector "
                "WHERE name LIKE 'connector-%' LIMIT 10)"
            )
            con.commit()
            con.close()
            changed, line = timed_sync(server, ledger)
            print(f"sync after 100 deactivations and 10 connector deletions: {changed:.1f} s")
            print("  " + line[:200])
        finally:
            server.stop()


if __name__ == "__main__":
    main()
