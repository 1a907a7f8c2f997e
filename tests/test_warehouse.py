"""The DuckDB warehouse: interval tables agree with the Python projection, syncs are exactly once."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from strategies import COMMANDS, TENANTS, USERS, apply_commands

from ledger import errors as E
from ledger.app import AccessLedger
from projections.answers import what_can
from projections.permissions import PermissionState
from reports.audits import run_audit
from reports.errors import WarehouseMismatch
from reports.warehouse import Warehouse, default_path

ROOT = Path(__file__).resolve().parent.parent


def d(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


# -- the projection and the warehouse agree, row for row ------------------------------------------


def event_time(i: int) -> str:
    # Two events per instant: events at exactly the same time as an expiry or another event.
    base = datetime(2026, 2, 2, tzinfo=UTC) + timedelta(hours=12 * (i // 2))
    return base.strftime("%Y-%m-%dT%H:%M:%SZ")


def prelude(led: AccessLedger) -> None:
    """Something to assign to and in, so that most random commands are accepted."""
    at = "2026-02-01T00:00:00Z"
    led.init(at=at)
    for tenant in ("prod", "dev"):
        led.create_tenant(tenant, at=at)
    for user in ("alice", "bob", "carol"):
        led.create_user(user, at=at)
    led.create_service_account("ci", at=at)
    led.create_team("ml", at=at)
    led.add_team_member("ml", "user:alice", at=at)
    led.create_role("c1", "tenant", ["model:promote"], base="viewer", at=at)
    led.create_role("o1", "organization", ["member:*"], at=at)


def build(led: AccessLedger, commands, first: int = 0) -> None:
    apply_commands(led, commands, event_time, first)


def projection_rows(led: AccessLedger, instant: str) -> list[tuple]:
    state = PermissionState()
    for position, event in led.read():
        if event["at"] > instant:
            break
        state.apply(position, event)
    rows = []
    for principal in state.subjects():
        for r in what_can(state, principal, None, instant):
            rows.append(
                (
                    principal,
                    r["tenant"],
                    r["permission"],
                    r["resource_scope"],
                    r["role"],
                    r["via_team"],
                    r["from_role"],
                    r["position"],
                )
            )
    return sorted(rows, key=repr)


def warehouse_rows(wh: Warehouse, instant: str) -> list[tuple]:
    at = datetime.fromisoformat(instant).astimezone(UTC).replace(tzinfo=None)
    rows = wh.con.execute(
        "SELECT principal, tenant, permission, resource_scope, role, via_team, from_role, "
        "assignment_position FROM effective_at($at::TIMESTAMP)",
        {"at": at},
    ).fetchall()
    return sorted(rows, key=repr)


def instants_of(led: AccessLedger) -> list[str]:
    """Instants worth asking about: each event's time, half a day later, every expiry, before and after all."""
    out = {"2026-01-01T00:00:00Z", "2026-12-31T00:00:00Z"}
    for _, event in led.read():
        out.add(event["at"])
        later = datetime.fromisoformat(event["at"]) + timedelta(hours=6)
        out.add(later.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if event.get("expires_at"):
            out.add(event["expires_at"])
    return sorted(out)


@settings(
    max_examples=int(os.environ.get("WAREHOUSE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=st.lists(COMMANDS, min_size=8, max_size=60), cut=st.floats(0, 1), data=st.data())
def test_effective_permissions_from_intervals_equal_the_projection(tmp_path_factory, commands, cut, data):
    folder = tmp_path_factory.mktemp("wh")
    led = AccessLedger.open(str(folder / "l.db"), create=True)
    split = int(len(commands) * cut)
    prelude(led)
    build(led, commands[:split])
    wh = Warehouse.open(led, ":memory:")
    try:
        wh.sync()  # a first sync part way, so the second one exercises the incremental rebuild
        build(led, commands[split:], first=split)
        wh.sync()
        instants = data.draw(st.lists(st.sampled_from(instants_of(led)), min_size=1, max_size=8, unique=True))
        for instant in instants:
            expected = projection_rows(led, instant)
            assert warehouse_rows(wh, instant) == expected, instant
            # The review audit: one row per path, the same paths as what-can's
            reviewed = [
                (r["who"], r["tenant"], r["what"], r["resource_scope"], r["role"], r["via_team"], r["from_role"])
                for r in run_audit(wh, "review", at=instant, sync=False).rows
            ]
            assert sorted(reviewed, key=repr) == sorted((row[:7] for row in expected), key=repr), instant
            note_event(
                f"rows: {'none' if not expected else 'some'}; through a team: {any(r[5] for r in expected)}; "
                f"organization: {any(r[1] is None for r in expected)}; inherited: "
                f"{any(r[6] != r[4] for r in expected)}; resource-scoped: {any(r[3] for r in expected)}"
            )
    finally:
        wh.close()
        led.close()


# -- sync --------------------------------------------------------------------------------------------


def small_history(led: AccessLedger) -> None:
    led.create_tenant("prod", at=d(1))
    led.create_user("alice", at=d(1))
    led.create_team("ml", at=d(1))
    led.add_team_member("ml", "user:alice", at=d(2))
    led.create_role("ds", "tenant", ["model:promote"], base="editor", at=d(2))
    led.assign_role("ds", "team:ml", tenant="prod", at=d(3))
    led.register_connector("aws", "prod", at=d(3))
    for hour in range(10):
        led.record_connector_access("aws", "prod", "user:alice", "allowed", at=d(4, hour))


def test_sync_is_exactly_once_and_incremental(led, tmp_path):
    small_history(led)
    with Warehouse.open(led, tmp_path / "w.duckdb") as wh:
        assert wh.sync() == led.head()
        assert wh.sync() == 0
        led.record_access("user:alice", "read", "model/m", "allowed", tenant="prod", at=d(5))
        assert wh.sync() == 1
        assert wh.position == led.head()
        count, distinct, low, high = wh.con.execute(
            "SELECT count(*), count(DISTINCT position), min(position), max(position) FROM events"
        ).fetchall()[0]
        assert (count, distinct, low, high) == (led.head(), led.head(), 1, led.head())


def test_warehouse_rows_match_the_events(led, tmp_path):
    small_history(led)
    with Warehouse.open(led, tmp_path / "w.duckdb") as wh:
        wh.sync()
        stored = wh.query(
            "SELECT position, type, role, base, permissions, principal, tenant FROM events WHERE position = 6"
        )
        assert stored == [
            {
                "position": 6,
                "type": "RoleCreated",
                "role": "ds",
                "base": "editor",
                "permissions": ["model:promote"],
                "principal": None,
                "tenant": None,
            }
        ]
        assert wh.query("SELECT principal, tenant, role, from_position, valid_to FROM assignments") == [
            {"principal": "team:ml", "tenant": "prod", "role": "ds", "from_position": 7, "valid_to": None}
        ]
        assert wh.query("SELECT ancestor, depth FROM role_chain WHERE role = 'ds' ORDER BY depth") == [
            {"ancestor": "ds", "depth": 0},
            {"ancestor": "editor", "depth": 1},
        ]
        assert wh.query(
            "SELECT count(*) AS n FROM usage WHERE resource = 'service_connector/aws' AND action = 'read_secret_value'"
        ) == [{"n": 10}]


def test_default_path_is_beside_the_sqlite_ledger(tmp_path):
    led = AccessLedger.open(str(tmp_path / "x.db"), create=True)
    assert default_path(led) == str(tmp_path / "x.db") + ".duckdb"
    led.close()


def test_warehouse_file_is_readable_by_its_owner_only(led, tmp_path):
    small_history(led)
    path = tmp_path / "w.duckdb"
    with Warehouse.open(led, path) as wh:
        wh.sync()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_warehouse_of_another_ledger_is_refused(url_factory, tmp_path):
    first = AccessLedger.open(url_factory("a"), create=True)
    first.init(at=d(1))
    small_history(first)
    second = AccessLedger.open(url_factory("b"), create=True)
    second.init(org="other", at=d(1))
    small_history(second)
    path = tmp_path / "w.duckdb"
    with Warehouse.open(first, path) as wh:
        wh.sync()
    before = path.read_bytes()
    with pytest.raises(WarehouseMismatch, match="does not match this ledger at position 18"):
        Warehouse.open(second, path)  # refused as it opens, before anything reads it
    assert path.read_bytes() == before  # and left as it was: it is the other ledger's
    first.close()
    second.close()


def dump(path: Path) -> dict[str, list[tuple]]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for table in Warehouse.tables():
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            if table == "meta":
                rows = [row for row in rows if row[0] != "id"]  # each file's own random id
            if table == "sync_state":
                rows = [row[:4] for row in rows]  # synced_at differs from run to run
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def many_events(led: AccessLedger, n: int) -> None:
    import orjson

    lines = [orjson.dumps({"type": "TenantCreated", "at": d(1), "actor": "system", "tenant": "prod"})]
    lines += [orjson.dumps({"type": "UserCreated", "at": d(1), "actor": "system", "user": f"u{i}"}) for i in range(50)]
    lines += [
        orjson.dumps(
            {
                "type": "RoleAssigned",
                "at": d(2),
                "actor": "system",
                "role": "viewer",
                "principal": f"user:u{i}",
                "tenant": "prod",
            }
        )
        for i in range(50)
    ]
    lines += [
        orjson.dumps(
            {
                "type": "ResourceAccessed",
                "at": d(3),
                "actor": "system",
                "principal": f"user:u{i % 50}",
                "tenant": "prod",
                "resource": "model/m",
                "action": "read",
                "outcome": "allowed",
            }
        )
        for i in range(n)
    ]
    led.import_lines(lines)


def test_a_sync_interrupted_between_chunks_is_synced_afresh_to_the_same_rows(led, tmp_path):
    many_events(led, 2000)
    with Warehouse.open(led, tmp_path / "whole.duckdb") as wh:
        wh.sync(chunk_size=300)
    calls = []

    def interrupt(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with Warehouse.open(led, tmp_path / "cut.duckdb") as wh:
        with pytest.raises(KeyboardInterrupt):
            wh.sync(interrupt, chunk_size=300)
        assert wh._state()[0] == 900  # three whole chunks, and nothing of the fourth
    # Nothing proves the chunks a cut sync left (the ledger records a file's hash after a whole sync):
    # the file is emptied and synced afresh, and says why.
    with Warehouse.open(led, tmp_path / "cut.duckdb") as wh:
        assert (
            wh.rebuilt == "it holds position 900, the ledger recorded 0 (an interrupted sync)"
            or wh.rebuilt == "the ledger holds no record of it"
        )
        assert wh.sync(chunk_size=300) == led.head()
    assert dump(tmp_path / "cut.duckdb") == dump(tmp_path / "whole.duckdb")


KILLED_SYNC = textwrap.dedent("""
    import sys, time
    from ledger.app import AccessLedger
    from reports.warehouse import Warehouse
    led = AccessLedger.open(sys.argv[1])
    wh = Warehouse.open(led, sys.argv[2])
    def slow(n):
        print(n, flush=True)
        time.sleep(0.3)
    wh.sync(slow, chunk_size=int(sys.argv[3]))
""")


def test_a_sync_killed_midway_and_run_again_gives_exactly_the_rows_of_an_uninterrupted_sync(tmp_path):
    url = str(tmp_path / "l.db")
    led = AccessLedger.open(url, create=True)
    led.init(at=d(1))
    many_events(led, 5000)
    with Warehouse.open(led, tmp_path / "whole.duckdb") as wh:
        wh.sync(chunk_size=400)
    killed = tmp_path / "killed.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, url, str(killed), "400"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "400"  # one chunk committed, the next one under way
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = tmp_path / "killed.duckdb.sync"
    assert not leftovers.exists()  # chunks are parsed in memory: no file a killed sync could leave behind
    import duckdb

    con = duckdb.connect(str(killed), read_only=True)
    done = con.execute("SELECT position FROM sync_state").fetchall()[0][0]
    assert 400 <= done < led.head() and done % 400 == 0  # whole chunks only, each with its position
    con.close()
    with Warehouse.open(led, killed) as wh:
        assert wh.rebuilt is not None  # what a killed sync left is not proven: synced afresh
        assert wh.sync() == led.head()
    assert dump(killed) == dump(tmp_path / "whole.duckdb")
    led.close()


# -- the secrets audit agrees with the projection's check at every access -----------------------------

SECRET_READS = st.tuples(
    st.just("secret_read"),
    st.one_of(USERS, st.just("service_account:ci")),
    TENANTS,
    st.sampled_from(["allowed", "allowed", "denied"]),
)


@settings(
    max_examples=int(os.environ.get("WAREHOUSE_EXAMPLES", "60")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=st.lists(st.integers(0, 2).flatmap(lambda k: SECRET_READS if k else COMMANDS), min_size=8, max_size=60))
def test_secrets_audit_authorisation_equals_the_projection_check(tmp_path_factory, commands):
    from itertools import groupby

    from projections.answers import Question, check
    from reports.audits import run_audit

    led = AccessLedger.open(str(tmp_path_factory.mktemp("wh") / "l.db"), create=True)
    prelude(led)
    for tenant in ("prod", "dev"):
        led.register_connector("aws", tenant, at="2026-02-01T00:00:00Z")
    # Paths to the secret that the random commands then open and close: through a team (alice), a
    # predefined role (bob), a resource-scoped grant that expires (carol).
    led.create_role("reader", "tenant", ["service_connector:read_secret_value"], at="2026-02-01T00:00:00Z")
    led.assign_role("reader", "team:ml", tenant="prod", at="2026-02-01T00:00:00Z")
    led.assign_role("admin", "user:bob", tenant="dev", at="2026-02-01T00:00:00Z")
    led.assign_role(
        "reader",
        "user:carol",
        tenant="prod",
        resource="service_connector/aws",
        expires_at="2026-02-08T00:00:00Z",
        at="2026-02-01T00:00:00Z",
    )
    for i, (name, *args) in enumerate(commands):
        if name == "secret_read":
            principal, tenant, outcome = args
            try:
                led.record_connector_access("aws", tenant, principal, outcome, at=event_time(i))
            except E.LedgerError:
                pass
        else:
            build(led, [(name, *args)], first=i)
    # The oracle: at each read, the projection with every event up to that instant (DESIGN section 3).
    expected = {}
    state = PermissionState()
    events = list(led.read())
    for instant, group in groupby(events, key=lambda pe: pe[1]["at"]):
        group = list(group)
        for position, ev in group:
            state.apply(position, ev)
        for position, ev in group:
            if ev["type"] == "ConnectorSecretAccessed":
                q = Question(ev["principal"], "read_secret_value", "service_connector/aws", ev["tenant"])
                expected[position] = check(state, q, instant)["allowed"]
    wh = Warehouse.open(led, ":memory:")
    try:
        rows = run_audit(wh, "secrets").rows
    finally:
        wh.close()
        led.close()
    got = {r["positions"][0]: r["authorised"] for r in rows}
    assert got == expected
    note_event(f"reads authorised: {any(expected.values())}; not authorised: {not all(expected.values())}")
    for r in rows:
        want = {
            (True, "allowed"): "authorised",
            (False, "allowed"): "unauthorised-access",
            (True, "denied"): "denied-although-authorised",
            (False, "denied"): "denied",
        }
        assert r["finding"] == want[(r["authorised"], r["outcome"])]


# -- the use totals the sync keeps answer like a scan of the uses -----------------------------------

ACCESSES = st.tuples(
    st.just("access"),
    st.one_of(USERS, st.just("service_account:ci")),
    st.sampled_from([("read", "model/m1"), ("promote", "model/m1"), ("create", "pipeline/p1"), ("read", "artifact/a")]),
    st.sampled_from(["prod", "dev", None]),
    st.sampled_from(["allowed", "allowed", "denied"]),
)


@settings(
    max_examples=int(os.environ.get("WAREHOUSE_EXAMPLES", "60")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    commands=st.lists(
        st.integers(0, 3).flatmap(lambda k: (COMMANDS, SECRET_READS, ACCESSES, ACCESSES)[k]), min_size=8, max_size=60
    ),
    cut=st.floats(0, 1),
)
def test_audits_from_the_use_totals_equal_audits_from_the_uses(tmp_path_factory, commands, cut):
    import duckdb

    from reports.audits import use_totals
    from reports.sql_files import sql_text

    led = AccessLedger.open(str(tmp_path_factory.mktemp("wh") / "l.db"), create=True)
    prelude(led)
    for tenant in ("prod", "dev"):
        led.register_connector("aws", tenant, at="2026-02-01T00:00:00Z")
    led.assign_role("admin", "user:bob", tenant="dev", at="2026-02-01T00:00:00Z")
    led.assign_role("c1", "team:ml", tenant="prod", at="2026-02-01T00:00:00Z")
    led.assign_role("viewer", "user:carol", tenant="prod", resource="model/m1", at="2026-02-01T00:00:00Z")

    def run(part, first):
        for i, (name, *args) in enumerate(part, first):
            try:
                if name == "secret_read":
                    principal, tenant, outcome = args
                    led.record_connector_access("aws", tenant, principal, outcome, at=event_time(i))
                elif name == "access":
                    principal, (action, resource), tenant, outcome = args
                    led.record_access(principal, action, resource, outcome, tenant, at=event_time(i))
                else:
                    build(led, [(name, *args)], first=i)
            except E.LedgerError:
                pass

    split = int(len(commands) * cut)
    wh = Warehouse.open(led, ":memory:")
    try:
        run(commands[:split], 0)
        wh.sync()  # totals merged over two syncs
        run(commands[split:], split)
        wh.sync()
        scratch = wh.con.execute(
            'SELECT principal, coalesce(tenant, \'\'), resource_type, action, outcome, min("at"), max("at"), '
            "max(position), count(*) FROM usage GROUP BY ALL"
        ).fetchall()
        assert wh.table_rows("usage_totals") == sorted(scratch, key=repr)
        query = duckdb.extract_statements(sql_text("review.sql"))[-1].query
        at = datetime(2026, 12, 31)
        assert use_totals(wh, at)
        used = False
        for principal, tenant in ((None, None), ("user:alice", None), (None, "prod")):
            params = {"at": at, "principal": principal, "tenant": tenant}
            from_totals = wh.con.sql(query, params={**params, "totals": True}).fetchall()
            scanned = wh.con.sql(query, params={**params, "totals": False}).fetchall()
            assert from_totals == scanned
            used = used or any(row[13] is not None for row in from_totals)  # last_used
        lp = duckdb.extract_statements(sql_text("least_privilege.sql"))[-1].query
        for window_start in (datetime(2026, 1, 1), datetime(2026, 2, 10)):
            params = {"at": at, "window_start": window_start}
            assert (
                wh.con.sql(lp, params={**params, "totals": True}).fetchall()
                == wh.con.sql(lp, params={**params, "totals": False}).fetchall()
            )
        note_event(f"uses: {bool(scratch)}; reviewed rows with a use: {used}")
    finally:
        wh.close()
        led.close()


# -- least privilege sizes roles on the uses the projection authorises ------------------------------


@settings(
    max_examples=int(os.environ.get("WAREHOUSE_EXAMPLES", "60")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    commands=st.lists(
        st.integers(0, 3).flatmap(lambda k: (COMMANDS, SECRET_READS, ACCESSES, ACCESSES)[k]), min_size=8, max_size=60
    )
)
def test_least_privilege_used_permissions_are_the_uses_the_projection_authorises(tmp_path_factory, commands):
    """#24 item 8, against the oracle of DESIGN section 3: smallest-role's used permissions per principal
    and tenant are exactly the TYPE:ACTION of the allowed uses that check() allows at their instant (so
    neither an unauthorised read nor a use while deactivated)."""
    from itertools import groupby

    from projections.answers import Question, check
    from reports.audits import run_audit

    led = AccessLedger.open(str(tmp_path_factory.mktemp("wh") / "l.db"), create=True)
    prelude(led)
    for tenant in ("prod", "dev"):
        led.register_connector("aws", tenant, at="2026-02-01T00:00:00Z")
    led.assign_role("viewer", "team:ml", tenant="prod", at="2026-02-01T00:00:00Z")
    led.assign_role("admin", "user:bob", tenant="dev", at="2026-02-01T00:00:00Z")
    for i, (name, *args) in enumerate(commands):
        try:
            if name == "secret_read":
                principal, tenant, outcome = args
                led.record_connector_access("aws", tenant, principal, outcome, at=event_time(i))
            elif name == "access":
                principal, (action, resource), tenant, outcome = args
                led.record_access(principal, action, resource, outcome, tenant=tenant, at=event_time(i))
            else:
                build(led, [(name, *args)], first=i)
        except E.LedgerError:
            pass
    expected: dict[tuple[str, str], set[str]] = {}
    state = PermissionState()
    for instant, group in groupby(list(led.read()), key=lambda pe: pe[1]["at"]):
        group = list(group)
        for position, ev in group:
            state.apply(position, ev)
        for _, ev in group:
            if ev["type"] not in ("ConnectorSecretAccessed", "ResourceAccessed") or ev["outcome"] != "allowed":
                continue
            if ev["type"] == "ConnectorSecretAccessed":
                q = Question(ev["principal"], "read_secret_value", "service_connector/aws", ev["tenant"])
            else:
                q = Question(ev["principal"], ev["action"], ev["resource"], ev.get("tenant"))
            if check(state, q, instant)["allowed"]:
                kind = q.resource.split("/")[0]
                expected.setdefault((q.principal, q.tenant or ""), set()).add(f"{kind}:{q.action}")
    wh = Warehouse.open(led, ":memory:")
    try:
        rows = run_audit(wh, "least-privilege", at="2026-12-31T00:00:00Z", window="365d").rows
    finally:
        wh.close()
        led.close()
    got = {(r["who"], r["tenant"] or ""): set(r["used_permissions"]) for r in rows if r["finding"] == "smallest-role"}
    assert got == expected
    note_event(f"principals with authorised uses: {len(expected)}")
