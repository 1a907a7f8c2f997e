"""The service under bounded load on loopback, measured with wrk (Debian's `wrk`; generator and service share
the machine's cores).

    python benchmarks/service_bench.py [--pg postgresql://postgres@127.0.0.1:54329/postgres] [--workers 2]
                                       [--duration 10] [--connections 32] [--only reads|writes]
                                       [--ledger LEDGER.db] [--warmup 3]

Builds a ledger of 200 users in 4 teams and 10 tenants with role assignments (SQLite in a temporary folder;
with --pg, also one in a fresh schema of that server for the writes, dropped afterwards), issues a token,
starts `access-ledger serve --workers N` and runs wrk for each figure:
  - `GET /v1/whoami`: the cheapest authenticated answer (token check, JSON), the framework's floor;
  - `POST /v1/check`, one question, at 32 connections: req/s, p99, and its ratio to whoami;
  - `POST /v1/check` with 100 questions: questions/s;
  - `POST /v1/events`, one event (PostgreSQL when --pg is given): req/s, p99;
  - `POST /v1/events`, 1,000 events a request: events/s.
Each service is warmed up first (--warmup seconds of the request measured next, not counted: a worker's first
requests open the ledger, fold the token state and record the token's first use). Prints each figure with its
target, the count of non-2xx answers, and the load average. With --ledger, the read
figures are taken on a copy of that SQLite ledger (a year of a large platform, say) instead of the small one: its
token is issued in the copy, and the questions ask about principals, tenants and resources of its assignments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from access_ledger import api
from ledger.app import AccessLedger

console = Console()
TENANTS = [f"t{n}" for n in range(10)]


def build(url: str) -> str:
    """A ledger of 200 users, 4 teams, 10 tenants and their assignments; a token with every scope."""
    with AccessLedger.open(url, create=True) as led:
        d = "2026-01-01T00:00:00Z"
        led.init(org="acme", at=d)
        for t in TENANTS:
            led.create_tenant(t, at=d)
        for n in range(4):
            led.create_team(f"team{n}", at=d)
        for n in range(200):
            led.create_user(f"u{n}", at=d)
            led.add_team_member(f"team{n % 4}", f"user:u{n}", at=d)
        led.create_service_account("bench", at=d)
        for n in range(4):
            for t in TENANTS[n::4]:
                led.assign_role("editor", f"team:team{n}", tenant=t, at=d)
        for n in range(0, 200, 3):
            led.assign_role("viewer", f"user:u{n}", tenant=TENANTS[n % 10], resource=f"model/m{n}", at=d)
        scopes = ["read", "audit", "report", "admin"]
        return api.create_token(led, "service_account:bench", scopes, actor="system")["token"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = Path(sys.executable).parent / "access-ledger"
    process = subprocess.Popen(
        [str(exe), "--db", url, "serve", "--port", str(port), "--workers", str(workers)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=log.parent,
        env={**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            # (/readyz answers once the worker has warmed up: some seconds on a ledger of a million events)
            left = max(1.0, deadline - time.monotonic())
            out = subprocess.run(["curl", "-s", base + "/readyz"], capture_output=True, timeout=left).stdout
            if b'"ready"' in out:
                return process, base
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the service did not start: {log.read_text()[-2000:]}")


def wrk(base: str, path: str, token: str, body: bytes | None, folder: Path, duration: int, connections: int) -> dict:
    """Run wrk against one path; req/s, p99 in ms, non-2xx count."""
    script = folder / "wrk.lua"
    lines = [f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body is not None:
        (folder / "body").write_bytes(body)
        lines += [
            'wrk.method = "POST"',
            'wrk.headers["Content-Type"] = "application/json"',
            f'local f = io.open("{folder / "body"}", "rb"); wrk.body = f:read("*a"); f:close()',
        ]
    script.write_text("\n".join(lines) + "\n")
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), base + path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rate": rate, "p99": float(p99.group(1)) * scale, "bad": int(bad.group(1)) if bad else 0}


def event(at: str, n: int) -> dict:
    return {
        "type": "ResourceAccessed",
        "at": at,
        "actor": "service_account:bench",
        "principal": f"user:u{n % 200}",
        "tenant": TENANTS[n % 10],
        "resource": f"model/m{n % 50}",
        "action": "read",
        "outcome": "allowed",
    }


def line(name: str, got: dict, target: str, unit: str = "req/s", per: int = 1) -> None:
    rate = got["rate"] * per
    bad = f"  non-2xx {got['bad']}" if got["bad"] else ""
    console.print(f"{name:<34} {rate:>10,.0f} {unit:<12} p99 {got['p99']:>7.1f} ms   {target}{bad}", markup=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", help="a PostgreSQL server for the writes (a fresh schema, dropped afterwards)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", choices=["reads", "writes"], help="run only the read (check) or write figures")
    parser.add_argument("--ledger", help="take the read figures on a copy of this SQLite ledger")
    parser.add_argument(
        "--warmup", type=int, default=3, help="seconds of load before each service's first figure (20 with --ledger)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    folder = Path(tempfile.mkdtemp(prefix="service-bench-"))
    made: list[str] = []
    try:
        with console.status("building the ledger (SQLite)"):
            token = build(str(folder / "ledger.db"))
        d, c = args.duration, args.connections
        console.print(f"service: {args.workers} worker(s); wrk {c} connections, {d} s each after a warm-up; loopback")
        if args.only != "writes":
            if args.ledger:
                with console.status(f"copying {args.ledger}"):
                    url, read_token, question, questions = large(args.ledger, folder)
                console.print(f"reads on a copy of {args.ledger} (head {read_head(url):,})")
            else:
                url, read_token = str(folder / "ledger.db"), token
                question = {"principal": "user:u3", "action": "read", "resource": "model/m3", "tenant": "t3"}
                questions = [
                    {
                        "principal": f"user:u{n}",
                        "action": "read",
                        "resource": f"model/m{n % 50}",
                        "tenant": TENANTS[n % 10],
                    }
                    for n in range(100)
                ]
            reads(
                url,
                read_token,
                question,
                questions,
                folder,
                args.workers,
                d,
                c,
                max(args.warmup, 20 if args.ledger else 0),
            )
        if args.only != "reads":
            writes(folder, token, args, d, c, made)
        console.print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for schema in made:
            import psycopg

            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(folder, ignore_errors=True)


def read_head(url: str) -> int:
    with AccessLedger.open(url) as led:
        return led.head()


def large(source: str, folder: Path) -> tuple[str, str, dict, list[dict]]:
    """A copy of the SQLite ledger `source` with a token for the reads, one question and 100 about its assignments."""
    import sqlite3

    from projections.pit import Timeline

    url = str(folder / "large.db")
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(url) as dst:
        src.backup(dst)  # a consistent copy, whatever the source's journal holds
    with AccessLedger.open(url) as led:
        led.create_service_account("service-bench")
        token = api.create_token(led, "service_account:service-bench", ["read"], actor="system")["token"]
        held = [k for k in Timeline(led).current().assignments if k[1].startswith("user:") and k[2]]
    step = max(1, len(held) // 100)
    asked = [
        {"principal": holder, "action": "read", "resource": resource or "model/any", "tenant": tenant}
        for _, holder, tenant, resource in held[::step][:100]
    ]
    return url, token, asked[len(asked) // 2], asked


def reads(
    url: str,
    token: str,
    question: dict,
    questions: list[dict],
    folder: Path,
    workers: int,
    d: int,
    c: int,
    warmup: int = 0,
) -> None:
    """The floor, one check, and 100 checks a request, on the SQLite ledger at `url`."""
    process, base = serve(url, workers, folder / "server.log")
    try:
        if warmup:  # every worker warms up on its own (its review pages, its state): none of that is measured
            with console.status(f"warming up ({warmup} s of checks)"):
                wrk(base, "/v1/check", token, json.dumps(question).encode(), folder, warmup, c)
        with console.status("whoami"):
            floor = wrk(base, "/v1/whoami", token, None, folder, d, c)
        with console.status("check"):
            single = wrk(base, "/v1/check", token, json.dumps(question).encode(), folder, d, c)
        with console.status("check, 100 questions a request"):
            batch = wrk(base, "/v1/check", token, json.dumps(questions).encode(), folder, d, c)
    finally:
        process.terminate()
        process.wait(30)
    line("GET /v1/whoami (the floor)", floor, "")
    line("POST /v1/check (one question)", single, ">= 2,000/s, p99 <= 25 ms")
    console.print(f"{'ratio check / whoami':<34} {single['rate'] / floor['rate']:>10.2f}{'':<30}target >= 0.5")
    line("POST /v1/check (100 a request)", batch, ">= 20,000 questions/s", "questions/s", 100)


def writes(folder: Path, token: str, args: argparse.Namespace, d: int, c: int, made: list[str]) -> None:
    """One event a request and 1,000 a request, on PostgreSQL with --pg (the schema made, to be dropped, in `made`)."""
    write_url = str(folder / "ledger.db")
    if args.pg:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        made.append(schema)
        write_url = f"{args.pg}{'&' if '?' in args.pg else '?'}schema={schema}"
        with console.status("building the ledger (PostgreSQL)"):
            token = build(write_url)
    process, base = serve(write_url, args.workers, folder / "server-write.log")
    # One instant for every event: the ledger is append-only in time, and requests racing each other
    # with their own clocks would be refused when a later one commits first.
    at = (datetime.now(UTC) + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        if args.warmup:
            with console.status(f"warming up ({args.warmup} s of events, one a request)"):
                wrk(base, "/v1/events", token, json.dumps(event(at, 1)).encode(), folder, args.warmup, c)
        with console.status("events, one a request"):
            one = wrk(base, "/v1/events", token, json.dumps(event(at, 1)).encode(), folder, d, c)
        with console.status("events, 1,000 a request"):
            body = json.dumps([event(at, n) for n in range(1000)]).encode()
            many = wrk(base, "/v1/events", token, body, folder, d, min(c, 4))
    finally:
        process.terminate()
        process.wait(30)
    where = "PostgreSQL" if args.pg else "SQLite"
    line(f"POST /v1/events one ({where})", one, ">= 500/s, p99 <= 50 ms")
    line(f"POST /v1/events 1,000 ({where})", many, ">= 30,000 events/s", "events/s", 1000)
    with AccessLedger.open(write_url) as led:
        console.print(f"events in the write ledger: {led.head():,}; verify: {'ok' if led.verify().ok else 'FAILED'}")


if __name__ == "__main__":
    main()
