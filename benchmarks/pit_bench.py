"""Point-in-time questions on a large ledger, and current-state checks against pycasbin.

    python benchmarks/pit_bench.py --events 1000000

Builds (through the bulk import) a ledger of about 1M events: 10k users, 500 tenants, 200
roles, ~100k assignments, the rest access events. Prints:
  (a) seconds for 10,000 `access-ledger check --batch` questions at random instants, end to end
      (a fresh process: start, read, answer, print);
  (b) one `check` at a random instant after warm-up, inside the process (median of 20);
  (c) current-state checks per second, ours vs pycasbin enforce() on the same policy, same run;
  (d) peak memory of this process.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import write_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--questions", type=int, default=10_000)
    args = parser.parse_args()

    import casbin

    from ledger.app import AccessLedger
    from ledger.pipeline import default_workers
    from projections.answers import Question, check
    from projections.casbin_export import request, write
    from projections.pit import Timeline

    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "history.jsonl"
        write_history(str(source), args.events)
        db = folder / "pit.db"
        led = AccessLedger.open(str(db), create=True)
        start = time.perf_counter()
        with open(source, "rb") as f:
            result = led.import_lines((line.rstrip(b"\n") for line in f), workers=default_workers())
        built = time.perf_counter() - start
        first_at, last_at = led.time_of(1), led.newest_at()
        state = Timeline(led).current()
        users = [p for p in state.subjects() if p.startswith("user:")]
        tenants = sorted(state.tenants)
        grants = list(state.assignments.values())
        actions = ["read", "update", "create", "promote", "delete"]
        types = ["model", "pipeline", "artifact", "stack", "secret"]

        def question() -> dict[str, str]:
            if rng.random() < 0.5 and grants:  # half the questions about someone who holds something there
                a = rng.choice(grants)
                principal = a.principal if not a.principal.startswith("team:") else rng.choice(users)
                tenant = a.tenant or rng.choice(tenants)
            else:
                principal, tenant = rng.choice(users), rng.choice(tenants)
            return {
                "principal": principal,
                "action": rng.choice(actions),
                "resource": f"{rng.choice(types)}/r-{rng.randint(1, 200)}",
                "tenant": tenant,
            }

        def random_instant() -> str:
            lo = time.mktime(time.strptime(first_at, "%Y-%m-%dT%H:%M:%SZ"))
            hi = time.mktime(time.strptime(last_at, "%Y-%m-%dT%H:%M:%SZ"))
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.localtime(rng.uniform(lo, hi)))

        # (a) 10k questions at random instants through the CLI, end to end.
        batch = folder / "questions.jsonl"
        with open(batch, "w") as f:
            for _ in range(args.questions):
                f.write(json.dumps({**question(), "at": random_instant()}) + "\n")
        exe = Path(sys.executable).parent / "access-ledger"
        Timeline(led).at_position(led.head())  # the checkpoints exist, as on any ledger in use
        start = time.perf_counter()
        done = subprocess.run(
            [str(exe), "--db", str(db), "check", "--batch", str(batch)], capture_output=True, text=True
        )
        batch_seconds = time.perf_counter() - start
        if done.returncode not in (0, 1):
            raise SystemExit(f"check --batch failed: {done.stderr.strip()}")
        answered = len(done.stdout.splitlines())
        allowed = sum(1 for line in done.stdout.splitlines() if json.loads(line)["allowed"])

        # (b) one check at a random instant, after warm-up, inside the process.
        # (the path `access-ledger check --at` takes: only the principal's part of the nearest
        # checkpoint is copied, then the change events up to the instant are folded in)
        timeline = Timeline(led)

        def single(q: dict[str, str], instant: str) -> bool:
            state = timeline.for_principal(q["principal"], led.position_at(instant))
            return check(state, Question(**q), instant)["allowed"]

        from projections.pit import CHECKPOINT_EVERY

        for mark in range(0, led.head(), CHECKPOINT_EVERY):  # warm-up: every checkpoint in memory
            timeline.for_principal(users[0], mark + 1)
        singles = []
        for _ in range(20):
            instant = random_instant()
            q = question()
            t0 = time.perf_counter()
            single(q, instant)
            singles.append(time.perf_counter() - t0)

        # (c) current-state checks per second, ours vs pycasbin on the same policy.
        now_instant = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        current = timeline.current()
        model, policy = write(current, now_instant, folder / "casbin")
        enforcer = casbin.Enforcer(str(model), str(policy))
        qs = [question() for _ in range(20_000)]
        t0 = time.perf_counter()
        ours = [current.allows(q["principal"], q["action"], q["resource"], q["tenant"], now_instant) for q in qs]
        our_rate = len(qs) / (time.perf_counter() - t0)
        casbin_qs = qs[:2000]
        t0 = time.perf_counter()
        theirs = [
            enforcer.enforce(*request(q["principal"], q["action"], q["resource"], q["tenant"])) for q in casbin_qs
        ]
        casbin_rate = len(casbin_qs) / (time.perf_counter() - t0)
        agree = sum(1 for a, b in zip(ours, theirs) if a == b)
        policy_lines = sum(1 for _ in open(policy))
        led.close()

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"ledger: {result.written:,} events ({len(users):,} users, {len(tenants)} tenants, "
        f"{len(current.roles)} roles, {len(grants):,} assignments), imported in {built:.1f} s"
    )
    print(
        f"(a) check --batch, {answered:,} questions at random instants, end to end: {batch_seconds:.2f} s "
        f"({allowed:,} allowed)   target <= 5 s"
    )
    print(
        f"(b) one check at a random instant after warm-up: median {statistics.median(singles) * 1000:.0f} ms, "
        f"best {min(singles) * 1000:.0f} ms   target <= 50 ms"
    )
    print(
        f"(c) current-state checks: {our_rate:,.0f}/s vs pycasbin enforce() {casbin_rate:,.0f}/s on the same "
        f"policy ({policy_lines:,} lines) = {our_rate / casbin_rate:.1f}x   target >= 2x; "
        f"answers agree on {agree}/{len(casbin_qs)}"
    )
    print(f"(d) peak memory: {peak:.0f} MB")


if __name__ == "__main__":
    main()
