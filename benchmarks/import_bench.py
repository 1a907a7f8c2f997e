"""Import throughput against a plain eventsourcing baseline, and one change command end to end.

    python benchmarks/import_bench.py --events 1000000

Prints: the import rate on SQLite (events/s), the rate of eventsourcing saving the same number
of trivial events in batches of 1000 (the baseline), their ratio, and the wall time of
`access-ledger role assign ...` run as a fresh process (median of several runs).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson


def history(n: int, seed: int = 7) -> Iterator[bytes]:
    """n events in the proportions of a busy platform: people and roles change, usage dominates."""
    r = random.Random(seed)
    t = 1_735_689_600  # 2025-01-01
    step = max(1, int(300 * 24 * 3600 / max(n, 1)))

    def at() -> str:
        nonlocal t
        t += r.randint(0, step)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    def line(**event) -> bytes:
        return orjson.dumps(event)

    tenants = [f"tenant-{i}" for i in range(max(3, n // 20_000))]
    yield line(type="OrganizationCreated", at=at(), actor="system", name="acme", preset="zenml-pro")
    for tenant in tenants:
        yield line(type="TenantCreated", at=at(), actor="user:admin", tenant=tenant)
    roles = ["viewer", "editor", "admin"]
    for i in range(max(5, n // 5000)):
        role = f"custom-{i}"
        yield line(type="RoleCreated", at=at(), actor="user:admin", role=role, scope="tenant",
                   base=r.choice(["viewer", "editor"]), permissions=["model:promote", "pipeline:create"][: 1 + i % 2],
                   reason=f"SEC-{i}")
        roles.append(role)
    users: list[str] = []
    teams: list[str] = []
    held: set[tuple[str, str, str]] = set()
    members: set[tuple[str, str]] = set()
    written = 1 + len(tenants) + len(roles) - 3
    k = 0
    while written < n:
        k += 1
        roll = r.random()
        if roll < 0.01 or len(users) < 20:
            user = f"user-{len(users)}"
            users.append(user)
            yield line(type="UserCreated", at=at(), actor="user:admin", user=user, email=f"{user}@example.com")
        elif roll < 0.012:
            team = f"team-{len(teams)}"
            teams.append(team)
            yield line(type="TeamCreated", at=at(), actor="user:admin", team=team)
        elif roll < 0.02 and teams:
            membership = (r.choice(teams), f"user:{r.choice(users)}")
            if membership in members:
                continue
            members.add(membership)
            yield line(type="TeamMemberAdded", at=at(), actor="user:admin", team=membership[0],
                       member=membership[1], id=f"m{k}")
        elif roll < 0.08:
            key = (r.choice(roles), f"user:{r.choice(users)}", r.choice(tenants))
            if key in held:
                held.discard(key)
                yield line(type="RoleUnassigned", at=at(), actor="user:admin", role=key[0], principal=key[1],
                           tenant=key[2], reason=f"REV-{k}")
            else:
                held.add(key)
                yield line(type="RoleAssigned", at=at(), actor="user:admin", role=key[0], principal=key[1],
                           tenant=key[2], reason=f"REQ-{k}")
        elif roll < 0.17:
            yield line(type="ConnectorSecretAccessed", at=at(), actor="system", connector="aws",
                       tenant=r.choice(tenants), principal=f"user:{r.choice(users)}",
                       outcome="allowed" if r.random() < 0.97 else "denied", id=f"s{k}")
        else:
            yield line(type="ResourceAccessed", at=at(), actor="system", principal=f"user:{r.choice(users)}",
                       tenant=r.choice(tenants), resource=f"model/model-{r.randint(1, 200)}",
                       action=r.choice(["read", "read", "read", "update", "create"]),
                       outcome="allowed" if r.random() < 0.98 else "denied", id=f"a{k}")
        written += 1


def with_connectors(lines: Iterator[bytes]) -> Iterator[bytes]:
    """Register the `aws` connector in each tenant right after the tenant is created."""
    for line in lines:
        yield line
        if line.startswith(b'{"type":"TenantCreated"'):
            event = orjson.loads(line)
            yield orjson.dumps({"type": "ConnectorRegistered", "at": event["at"], "actor": "user:admin",
                                "connector": "aws", "tenant": event["tenant"], "connector_type": "aws"})


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
        with open(source, "wb") as f:
            for line in with_connectors(history(args.events)):
                f.write(line + b"\n")
        lines = sum(1 for _ in open(source, "rb"))
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
