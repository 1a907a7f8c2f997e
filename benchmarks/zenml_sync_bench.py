"""`sync zenml` against a real ZenML 0.98 server holding 5,000 users and 500 connectors.

    ACCESS_LEDGER_TEST_ZENML=/path/to/venv-with-zenml-server python benchmarks/zenml_sync_bench.py

Starts the server (tests/zenml_server.py: a free loopback port, temp folders), creates one user and one
connector through the REST API, then clones them in the server's own SQLite database to 5,000 users
and 500 connectors (creating them through the API hashes a password per user: about an hour here),
with distinct ids, names and times. Times, end to end through the command line: the first sync
into an empty ledger (target <= 60 s), a second sync with no change (target <= 5 s), and a sync after
100 users were deactivated and 10 connectors deleted in the database.
"""

from __future__ import annotations

import os
import sqlite3
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
            con = sqlite3.connect(db)
            con.execute(
                "UPDATE user SET active = 0 WHERE name IN (SELECT name FROM user WHERE name LIKE 'user-%' LIMIT 100)"
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
