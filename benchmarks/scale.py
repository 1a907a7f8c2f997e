"""A scale generator for the benchmarks: a busy platform's log with a chosen shape.

People and roles change, assignments come and go, and resource and connector-secret accesses
fill the rest. Deterministic from the seed; emits canonical JSONL bytes in time order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import orjson

RESOURCE_TYPES = ("model", "pipeline", "artifact", "stack", "secret")


def history(
    n: int,
    *,
    users: int | None = None,
    tenants: int | None = None,
    roles: int | None = None,
    assignments: int | None = None,
    seed: int = 7,
    start: int = 1_735_689_600,
    ids: bool = False,
) -> Iterator[bytes]:
    """About n events; by default the shape scales with n (1M: 10k users, 500 tenants, 200 roles, ~100k
    assignments). With `ids`, every event carries an idempotency id, so the file can be imported again
    (the re-run of an interrupted import); otherwise only the usage events do."""
    r = random.Random(seed)
    users = users or max(20, n // 100)
    tenants = tenants or max(3, n // 2000)
    roles = roles or max(5, n // 5000)
    assignments = assignments or n // 10
    span = 360 * 24 * 3600
    t = start
    step = max(1, span // max(n, 1))

    def at() -> str:
        nonlocal t
        t += r.randint(0, 2 * step)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    def line(**event: object) -> bytes:
        if ids and "id" not in event:
            event["id"] = f"e{written}"
        return orjson.dumps(event)

    written = 0

    def emit(data: bytes) -> bytes:
        nonlocal written
        written += 1
        return data

    tenant_names = [f"tenant-{i}" for i in range(tenants)]
    yield emit(line(type="OrganizationCreated", at=at(), actor="system", name="acme", preset="zenml-pro"))
    for tenant in tenant_names:
        stamp = at()
        yield emit(line(type="TenantCreated", at=stamp, actor="user:admin", tenant=tenant))
        yield emit(
            line(
                type="ConnectorRegistered",
                at=stamp,
                actor="user:admin",
                connector="aws",
                tenant=tenant,
                connector_type="aws",
            )
        )
    role_names = ["viewer", "editor", "admin"]
    for i in range(roles):
        role = f"role-{i}"
        perms = sorted({f"{r.choice(RESOURCE_TYPES)}:{r.choice(['promote', 'update', 'delete'])}" for _ in range(2)})
        yield emit(
            line(
                type="RoleCreated",
                at=at(),
                actor="user:admin",
                role=role,
                scope="tenant",
                base=r.choice(role_names[:3] + role_names[3:][-5:]),
                permissions=perms,
                reason=f"SEC-{i}",
            )
        )
        role_names.append(role)
    user_names: list[str] = []
    teams: list[str] = []
    members: set[tuple[str, str]] = set()
    held: list[tuple[str, str, str]] = []
    held_set: set[tuple[str, str, str]] = set()
    change_share = max(0.02, min(0.9, (users + assignments * 1.1) / max(1, n - written)))
    k = 0
    while written < n:
        k += 1
        if len(user_names) < users and (
            len(user_names) < 20 or r.random() < change_share * users / (users + assignments)
        ):
            user = f"user-{len(user_names)}"
            user_names.append(user)
            yield emit(line(type="UserCreated", at=at(), actor="user:admin", user=user, email=f"{user}@example.com"))
            if len(user_names) % 50 == 0:
                team = f"team-{len(teams)}"
                teams.append(team)
                yield emit(line(type="TeamCreated", at=at(), actor="user:admin", team=team))
            if teams and r.random() < 0.3:
                membership = (r.choice(teams), f"user:{user}")
                if membership not in members:
                    members.add(membership)
                    yield emit(
                        line(
                            type="TeamMemberAdded",
                            at=at(),
                            actor="user:admin",
                            team=membership[0],
                            member=membership[1],
                        )
                    )
            continue
        if r.random() < change_share:
            if held and r.random() < 0.08:
                key = held.pop(r.randrange(len(held)))
                held_set.discard(key)
                yield emit(
                    line(
                        type="RoleUnassigned",
                        at=at(),
                        actor="user:admin",
                        role=key[0],
                        principal=key[1],
                        tenant=key[2],
                        reason=f"REV-{k}",
                    )
                )
                continue
            principal = f"team:{r.choice(teams)}" if teams and r.random() < 0.05 else f"user:{r.choice(user_names)}"
            key = (r.choice(role_names), principal, r.choice(tenant_names))
            if key in held_set:
                continue
            held.append(key)
            held_set.add(key)
            extra = (
                {"expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 30 * 86400))}
                if r.random() < 0.05
                else {}
            )
            yield emit(
                line(
                    type="RoleAssigned",
                    at=at(),
                    actor="user:admin",
                    role=key[0],
                    principal=key[1],
                    tenant=key[2],
                    reason=f"REQ-{k}",
                    **extra,
                )
            )
        elif r.random() < 0.1:
            yield emit(
                line(
                    type="ConnectorSecretAccessed",
                    at=at(),
                    actor="system",
                    connector="aws",
                    tenant=r.choice(tenant_names),
                    principal=f"user:{r.choice(user_names)}",
                    outcome="allowed" if r.random() < 0.97 else "denied",
                    id=f"s{k}",
                )
            )
        else:
            yield emit(
                line(
                    type="ResourceAccessed",
                    at=at(),
                    actor="system",
                    principal=f"user:{r.choice(user_names)}",
                    tenant=r.choice(tenant_names),
                    resource=f"{r.choice(RESOURCE_TYPES)}/r-{r.randint(1, 200)}",
                    action=r.choice(["read", "read", "read", "update", "create"]),
                    outcome="allowed" if r.random() < 0.98 else "denied",
                    id=f"a{k}",
                )
            )


def write_history(path: str, n: int, *, ids: bool = False, **shape: int) -> int:
    """Write the history to a JSONL file; return the number of lines."""
    count = 0
    with open(path, "wb") as f:
        for data in history(n, ids=ids, **shape):
            f.write(data + b"\n")
            count += 1
    return count


def generated_ledger(db: str, events: int, **shape: int) -> None:
    """A ledger at `db` holding access_ledger.demo.generator's year of a large platform (the demo's generator at scale:
    10,000 users, 500 tenants, 200 roles, ~100k assignments, the rest resource and secret accesses).
    Built through the bulk import, as `access-ledger import` does; reused when `db` already has events."""
    import time as clock

    from access_ledger.demo.generator import generate
    from ledger.app import AccessLedger
    from ledger.pipeline import default_workers

    with AccessLedger.open(db, create=True) as led:
        if led.head():
            print(f"ledger: {db} has {led.head():,} events already; reused")
            return
        scenario = generate("huge", events=events, **shape)
        start = clock.perf_counter()
        result = led.import_lines(scenario.lines(), workers=default_workers())
        took = clock.perf_counter() - start
        c = scenario.counts
        print(
            f"ledger: {result.written:,} events ({c['UserCreated']:,} users, {c['TenantCreated']:,} tenants, "
            f"{c['RoleCreated']:,} custom roles, {c['RoleAssigned']:,} assignments), generated and imported in "
            f"{took:.0f} s ({result.written / took:,.0f}/s)"
        )
