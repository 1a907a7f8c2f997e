"""Access review campaigns on a 1M-event ledger of 10,000 principals.

    python benchmarks/review_bench.py --db /work/bench/review-1m.db [--runs 3] [--profile DIR]

Builds (through the bulk import; skipped when --db names a ledger that already has events)
access_ledger.demo.generator's year of 10,000 users and a CI service account per tenant in 40 tenants, 200
roles, ~100k assignments, the rest resource and connector-secret accesses (40 tenants rather than
500, so that a campaign over part of the platform reaches 50,000 items). The reviewers
(user:review-carol, user:review-dana for one team, user:review-erin as the fallback) are added
once. Each run then works on a fresh copy of that ledger and times, each command as a fresh
process through the CLI:
  - `review start` of a campaign over production and staging (the issue's example scope);
  - `review start` of a campaign over as many tenants as make 50,000 items;
  - `review items --format csv` of the 50,000 items (then split by reviewer);
  - `review decide --batch`, one file per reviewer: 10% revoke, 5% left undecided, the rest keep
    (with a reason, as a privileged keep needs one);
  - `review status`;
  - `review close --revoke-undecided`: the revoke decisions and the undecided items become
    removals in the close's transaction.
Prints each figure with its target (the best of the runs' wall times, every run's beside it, and
the least CPU time of the process, user + system, which the machine's load inflates less) and the
load average. With --profile DIR, one more run writes cProfile files of `review start` and
`review close` of the 50,000-item campaign there and prints their top functions.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import generated_ledger  # noqa: E402

SHAPE = {"users": 10_000, "tenants": 40, "roles": 200, "assignments": 100_000}
REVIEWER, TEAM_REVIEWER, FALLBACK = "user:review-carol", "user:review-dana", "user:review-erin"
TARGET_ITEMS = 50_000
EXE = str(Path(sys.executable).parent / "access-ledger")
CPU: dict[str, float] = {}  # the last run's CPU seconds of each command


def prepare(db: Path) -> tuple[list[str], list[str], str, dict[str, int]]:
    """The reviewers exist, every checkpoint and the current projection are stored (as on a ledger in
    use); the realistic scope, the 50,000-item scope, the team given its own reviewer, items per tenant."""
    from ledger.app import AccessLedger
    from projections.pit import Timeline
    from projections.reviews import population

    with AccessLedger.open(str(db)) as led:
        for ref in (REVIEWER, TEAM_REVIEWER, FALLBACK):
            if ref not in Timeline(led).current().principals:
                led.create_user(ref.split(":", 1)[1], actor="user:priya", reason="REV-1 access reviewers")
        timeline = Timeline(led)
        state = timeline.at_position(led.head())
        newest = led.newest_at() or ""
        per_tenant: dict[str, int] = {}
        per_team: dict[str, int] = {}
        for r in population(state, newest, sorted(t for t, live in state.tenants.items() if live), False):
            per_tenant[r["tenant"]] = per_tenant.get(r["tenant"], 0) + 1
            for t in state.teams_of.get(r["principal"], ()):
                per_team[t] = per_team.get(t, 0) + 1
        realistic = [t for t in ("production", "staging") if t in per_tenant]
        wide: list[str] = []
        for t in sorted(per_tenant, key=lambda t: (-per_tenant[t], t)):
            if sum(per_tenant[x] for x in wide) >= TARGET_ITEMS:
                break
            wide.append(t)
        team = max(sorted(per_team), key=lambda t: per_team[t])
    return realistic, sorted(wide), team, per_tenant


def copy_ledger(db: Path, to: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            shutil.copyfile(f"{db}{suffix}", f"{to}{suffix}")


def cli(db: Path, *args: str, profile: Path | None = None) -> tuple[float, str]:
    """Run `access-ledger --db DB ARGS` as a fresh process; (wall seconds, stdout). Exit on failure.
    The process's CPU seconds (user + system) are added up in CPU, under the command's name."""
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile), EXE] if profile else [EXE]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([*prefix, "--db", str(db), *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[args[1]] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"access-ledger {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return wall, done.stdout


def start_args(name: str, tenants: list[str], team: str) -> list[str]:
    return [
        "review",
        "start",
        name,
        *[a for t in tenants for a in ("--tenant", t)],
        "--reviewer",
        REVIEWER,
        "--reviewer-for",
        f"team:{team}={TEAM_REVIEWER}",
        "--fallback-reviewer",
        FALLBACK,
        "--due",
        "2099-01-01T00:00:00Z",
        "--actor",
        REVIEWER,
        "--reason",
        "REV-2 quarterly access review",
    ]


def one_run(
    db: Path,
    work: Path,
    realistic: list[str],
    wide: list[str],
    team: str,
    rng: random.Random,
    profiles: Path | None = None,
) -> dict[str, float | int]:
    """Every timed command once, on a fresh copy of the ledger (with `profiles`, start and close of the
    wide campaign under cProfile: their times are then not figures)."""
    copy_ledger(db, work)
    f: dict[str, float | int] = {}
    f["start_realistic"], out = cli(work, *start_args("Q3-production", realistic, team))
    f["start_realistic cpu"] = CPU["start"]
    f["items_realistic"] = int(out.split(" with ", 1)[1].split(" items", 1)[0])
    f["start_wide"], out = cli(work, *start_args("Q3-wide", wide, team), profile=profiles and profiles / "start.prof")
    f["start_wide cpu"] = CPU["start"]
    f["items_wide"] = int(out.split(" with ", 1)[1].split(" items", 1)[0])
    rows_csv = work.parent / "items.csv"
    f["items_csv"], _ = cli(work, "review", "items", "Q3-wide", "--format", "csv", "--out", str(rows_csv))
    f["items_csv cpu"] = CPU["items"]
    by_reviewer: dict[str, list[str]] = {}
    group: dict[str, str] = {}  # the items one team membership gives are decided alike (one outcome)
    with rows_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            by_reviewer.setdefault(row["reviewer"], []).append(row["item"])
            group[row["item"]] = f"{row['via']}/{row['principal']}" if row["via"] else row["item"]
    draws: dict[str, float] = {}
    f["decide"], f["decide cpu"], f["decided"], f["revokes"] = 0.0, 0.0, 0, 0
    for reviewer, numbers in sorted(by_reviewer.items()):
        batch = work.parent / f"decisions-{reviewer.split(':', 1)[1]}.csv"
        with batch.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["item", "decision", "reason"])
            for number in numbers:
                draw = draws.setdefault(group[number], rng.random())
                if draw < 0.05:
                    continue  # left undecided
                revoke = draw < 0.15
                w.writerow(
                    [
                        number,
                        "revoke" if revoke else "keep",
                        "no longer on the project" if revoke else "still on the team",
                    ]
                )
                f["decided"] += 1
                f["revokes"] += int(revoke)
        took, _ = cli(work, "review", "decide", "Q3-wide", "--batch", str(batch), "--actor", reviewer)
        f["decide"] += took
        f["decide cpu"] += CPU["decide"]
    f["status"], _ = cli(work, "review", "status", "Q3-wide")
    f["status cpu"] = CPU["status"]
    f["close"], out = cli(
        work,
        "review",
        "close",
        "Q3-wide",
        "--revoke-undecided",
        "--actor",
        REVIEWER,
        "--reason",
        "REV-2 review closed",
        profile=profiles and profiles / "close.prof",
    )
    f["close cpu"] = CPU["close"]
    f["removals"] = len(out.splitlines()) - 1
    return f


def print_profiles(folder: Path) -> None:
    """The top functions of the profiles of `review start` and `review close`."""
    import pstats

    for name in ("start", "close"):
        print(f"--- profile of review {name} of the wide campaign ({folder / name}.prof), by cumulative time:")
        pstats.Stats(str(folder / f"{name}.prof")).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="the 1M-event ledger (built when it has no events; reused after)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write cProfile files of start and close here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = args.db or folder / "review-1m.db"
        generated_ledger(str(db), args.events, **SHAPE)
        realistic, wide, team, per_tenant = prepare(db)
        from ledger.app import AccessLedger

        with AccessLedger.open(str(db)) as led:
            head = led.head()
            principals = len(led.entities("user")) + len(led.entities("service_account"))
        print(
            f"ledger: {head:,} events, {principals:,} principals (users and service accounts), "
            f"{len(per_tenant)} tenants, {sum(per_tenant.values()):,} assignments in force as items"
        )
        rng = random.Random(18)
        runs = []
        for n in range(args.runs):
            runs.append(one_run(db, folder / f"run{n}.db", realistic, wide, team, rng))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{folder / f'run{n}.db'}{suffix}").unlink(missing_ok=True)
        load = os.getloadavg()
        first = runs[0]

        def line(label: str, key: str, target: str) -> None:
            each = ", ".join(f"{r[key]:.2f}" for r in runs)
            cpu = min(r[f"{key} cpu"] for r in runs)
            print(f"{label:<50} {min(r[key] for r in runs):6.2f} s (cpu {cpu:5.2f} s)   {target}   (runs: {each})")

        print(
            f"campaigns: production and staging, {first['items_realistic']:,} items; "
            f"{len(wide)} tenants, {first['items_wide']:,} items (team {team} to its own reviewer)"
        )
        line("review start, production + staging", "start_realistic", "target <= 5 s")
        line(f"review start, {first['items_wide']:,} items", "start_wide", "target <= 5 s")
        line("review items --format csv", "items_csv", "no target")
        line(f"review decide --batch ({first['decided']:,} decisions)", "decide", "no target")
        line("review status", "status", "no target")
        line(f"review close --revoke-undecided ({first['removals']:,} removals)", "close", "target <= 10 s")
        print(
            f"({first['revokes']:,} revoke decisions, {first['items_wide'] - first['decided']:,} undecided; "
            f"each command a fresh process; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end)"
        )
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            one_run(db, folder / "profiled.db", realistic, wide, team, rng, args.profile)
            print_profiles(args.profile)


if __name__ == "__main__":
    main()
