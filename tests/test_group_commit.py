"""Group commit (ledger.group): several requests in one transaction, each answered as if written alone right after
the ones before it; and the service's POST /v1/events under concurrent clients (real uvicorn), SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from conftest import _drop_schema, make_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import Running, start, stop

from access_ledger import api
from ledger import errors as E
from ledger.app import AccessLedger, WriteResult, _stamped
from ledger.group import write_group
from ledger.timeutil import format_instant, now

D = "2026-01-01T00:00:00Z"
AT = "2026-01-02T00:00:00Z"


def _request(*events: dict) -> list[tuple[int, dict]]:
    return [(n, _stamped({"at": AT, **ev})) for n, ev in enumerate(events, 1)]


def _user(name: str, **extra) -> dict:
    return {"type": "UserCreated", "actor": "system", "user": name, **extra}


def _links(led: AccessLedger, base: int) -> list[tuple[int, str]]:
    with led.store.transaction(write=False) as c:
        c.execute("SELECT position, link FROM al_chain WHERE position > ? ORDER BY position", (base,))
        return [tuple(r) for r in c.fetchall()]


def _link_at(led: AccessLedger, position: int) -> str:
    with led.store.transaction(write=False) as c:
        c.execute("SELECT link FROM al_chain WHERE position = ?", (position,))
        return c.fetchone()[0]


def test_a_refused_request_in_a_group_leaves_the_others_written(two_ledgers):
    led, alone = two_ledgers
    start = led.head()
    requests = [
        (_request(_user("u1", id="a")), False),
        (
            _request(_user("u2"), {"type": "RoleAssigned", "actor": "system", "role": "nope", "principal": "user:u2"}),
            False,
        ),
        (_request(_user("u3", id="a")), False),  # the id of the first, another event: IdConflict
        (_request(_user("u1", id="a")), False),  # the first again: a no-op
        # u9 is flushed to the tables (the authority check reads them), then the tenant is refused: rolled back.
        (_request(_user("u9"), {"type": "TenantCreated", "actor": "user:u1", "tenant": "t"}), True),
        (_request(_user("u2"), _user("u9")), False),
    ]
    got = write_group(led, requests)
    assert [type(g).__name__ for g in got] == [
        "WriteResult",
        "UnknownEntity",
        "IdConflict",
        "WriteResult",
        "Unauthorised",
        "WriteResult",
    ]
    assert str(got[1]).startswith("line 2: role: unknown role 'nope'")
    assert "user:u1 lacks tenant:create" in str(got[4])
    first, again, last = got[0], got[3], got[5]
    assert isinstance(first, WriteResult) and isinstance(again, WriteResult) and isinstance(last, WriteResult)
    assert (first.written, first.first, first.last) == (1, start + 1, start + 1)
    assert (again.written, again.skipped, again.first, again.head) == (0, 1, None, first.head)
    assert (last.written, last.first, last.last) == (2, start + 2, start + 3)
    # Dense positions, each answer's head is the chain's link at its last event, and the log verifies.
    assert led.head() == start + 3
    assert [e.get("user") for _, e in led.read(start + 1)] == ["u1", "u2", "u9"]
    assert first.head == (start + 1, _link_at(led, start + 1))
    assert last.head == (start + 3, _link_at(led, start + 3))
    assert led.verify().ok
    assert {e["name"] for e in led.entities("user")} == {"u1", "u2", "u9"}
    # What one at a time writes: the same answers, events and links (stream versions are in the links).
    for chunk, enforce in requests:
        try:
            alone._write([chunk], enforce_authority=enforce)
        except E.LedgerError:
            pass
    assert _links(led, start) == _links(alone, start)
    # The next write starts from the group's head (its seal and head row agree).
    assert led.append(_user("u4", at=AT)) == start + 4
    assert led.verify().ok


def test_the_token_follower_extended_by_a_group_holds_what_reading_the_log_gives(led):
    from ledger.group import Committed
    from ledger.tokens import new_token
    from projections.tokens import TokenFollower

    led.create_user("alice", at=D)
    extended, behind = TokenFollower(led.store), TokenFollower(led.store)
    extended.catch_up()
    issued = {
        "type": "TokenIssued",
        "actor": "system",
        "token_id": new_token()[1],
        "principal": "user:alice",
        "scopes": ["report"],
        "secret_sha256": "0" * 64,
    }
    alice_leaves = {"type": "UserDeactivated", "actor": "system", "user": "alice"}
    committed = Committed()
    got = write_group(led, [(_request(issued), False), (_request(_user("bob"), alice_leaves), False)], committed)
    assert all(isinstance(g, WriteResult) for g in got)
    assert extended.extend(committed.start, committed.events, committed.end)
    read = TokenFollower(led.store)
    read.catch_up()
    a, b = extended.state, read.state
    position, at, link = led.store.head()
    assert (a.position, a.link, a.at) == (b.position, b.link, b.at) == (position, link, at)
    assert a.tokens == b.tokens and list(a.tokens) == [issued["token_id"]]
    assert a.active == b.active and a.active["user:alice"] is False
    # A follower that does not stand where the write began folds nothing: it reads the log instead.
    assert not behind.extend(committed.start, committed.events, committed.end)
    assert behind.state.position == 0 and not behind.state.tokens


# -- the property: a group writes what the same requests write one at a time, in the same order -----------

# Each event as (kind, user, actor, id); `_event` makes it one example's own (the ledgers are shared by examples).
_specs = st.tuples(
    st.sampled_from(["UserCreated", "UserDeactivated", "TenantCreated", "RoleAssigned", "ResourceAccessed"]),
    st.integers(0, 2),
    st.sampled_from(["system", "u0", "u1"]),
    st.one_of(st.none(), st.integers(0, 2)),
)
_requests = st.lists(st.tuples(st.lists(_specs, min_size=1, max_size=3), st.booleans()), min_size=2, max_size=8)
_round = itertools.count()


def _event(spec: tuple, n: int) -> dict:
    kind, u, actor, i = spec
    user, by = f"u{u}x{n}", "system" if actor == "system" else f"user:{actor}x{n}"
    ev: dict = {"type": kind, "actor": by}
    if kind in ("UserCreated", "UserDeactivated"):
        ev["user"] = user
    elif kind == "TenantCreated":
        ev["tenant"] = f"t{u}x{n}"
    elif kind == "RoleAssigned":
        ev.update(role="org_admin", principal=f"user:{user}")
    else:
        ev.update(principal=f"user:{user}", resource="model/m", action="read", outcome="allowed", tenant=f"t0x{n}")
    if i is not None:
        ev["id"] = f"i{i}x{n}"
    return ev


def _outcome(got: WriteResult | E.LedgerError, base: int) -> tuple:
    if isinstance(got, E.LedgerError):
        return type(got).__name__, str(got)

    def rel(p):
        return None if p is None else p - base

    return got.written, got.skipped, rel(got.first), rel(got.last), rel(got.head[0]), got.head[1]


@pytest.fixture
def two_ledgers(url_factory) -> Iterator[tuple[AccessLedger, AccessLedger]]:
    ledgers = []
    for name in ("grouped", "alone"):
        led = AccessLedger.open(url_factory(name), create=True)
        led.init(org="acme", at=D)
        ledgers.append(led)
    yield ledgers[0], ledgers[1]
    for led in ledgers:
        led.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=_requests)
def test_a_group_writes_what_the_requests_write_one_at_a_time(two_ledgers, requests):
    grouped, alone = two_ledgers
    n = next(_round)
    events = [([_event(spec, n) for spec in specs], enforce) for specs, enforce in requests]
    base = grouped.head()
    assert alone.head() == base
    got = write_group(grouped, [(_request(*evs), enforce) for evs, enforce in events])
    expected = []
    for evs, enforce in events:
        try:
            expected.append(alone._write([_request(*evs)], enforce_authority=enforce))
        except E.LedgerError as exc:
            expected.append(exc)
    assert [_outcome(g, base) for g in got] == [_outcome(x, base) for x in expected]
    assert list(grouped.read_bytes(base + 1)) == list(alone.read_bytes(base + 1))
    assert _links(grouped, base) == _links(alone, base)
    assert grouped.entities("user") == alone.entities("user") and grouped.grants() == alone.grants()
    assert grouped.verify().ok


# -- the service: concurrent POST /v1/events, through a real uvicorn ------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request, tmp_path_factory) -> Iterator[Running]:
    from conftest import BACKENDS

    if request.param not in BACKENDS:
        pytest.skip("no PostgreSQL server given (ACCESS_LEDGER_TEST_PG)")
    folder = tmp_path_factory.mktemp(f"group-{request.param}")
    url, schema = make_url(request.param, folder)
    with AccessLedger.open(url, create=True) as led:
        led.init(org="acme", at=D)
        led.create_tenant("prod", at=D)
        led.create_user("alice", at=D)
        led.create_user("bob", at=D)
        led.assign_role("org_admin", "user:alice", at=D)
        tokens = {
            "report": api.create_token(led, "user:alice", ["report"], actor="system")["token"],
            "alice": api.create_token(led, "user:alice", ["change"], actor="system")["token"],
            "bob": api.create_token(led, "user:bob", ["change"], actor="system")["token"],
        }
    running = start(url, folder / "server.log", tokens, "--workers", "2")
    try:
        yield running
    finally:
        stop(running)
        if schema:
            _drop_schema(schema)


def _all_at_once(post, count: int) -> None:
    """post(0) ... post(count - 1), each in its own thread, all started before any is waited for."""
    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _access(n: int, at: str, **extra) -> dict:
    return {
        "type": "ResourceAccessed",
        "actor": "user:alice",
        "principal": "user:alice",
        "tenant": "prod",
        "resource": f"model/m{n}",
        "action": "read",
        "outcome": "allowed",
        "id": f"c{n}",
        "at": at,
        **extra,
    }


def test_concurrent_posts_each_land_alone_or_are_refused_alone(served):
    # One instant for every request (they may land in any order), after the service's own TokenUsed.
    at = format_instant(now() + timedelta(minutes=1))
    bodies: list[object] = []
    for n in range(24):
        if n % 8 == 3:
            bodies.append(
                [_access(n, at), {**_access(1000 + n, at), "principal": "user:nobody"}]
            )  # 400: none of it lands
        elif n % 8 == 5:
            bodies.append({"type": "TokenUsed", "actor": "user:alice", "token_id": "tok_x"})  # 403
        elif n % 8 == 7:
            bodies.append(_access(n - 1, at))  # the same event as another request's: a no-op, whichever lands first
        else:
            bodies.append([_access(n, at), _access(100 + n, at)] if n % 2 else _access(n, at))
    answers: list[httpx.Response | None] = [None] * len(bodies)
    ready = threading.Barrier(len(bodies))

    def post(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            ready.wait()
            for _ in range(10):
                answers[i] = client.post(
                    served.base + "/v1/events",
                    json=bodies[i],
                    headers={"Authorization": f"Bearer {served.tokens['report']}"},
                )
                # As a client does: a 503 ("another writer held the ledger too long", two workers on one SQLite
                # file on a loaded machine) wrote nothing, and the retry is idempotent by id.
                if answers[i].status_code != 503:
                    break

    _all_at_once(post, len(bodies))
    with AccessLedger.open(served.url) as led:
        by_id = {e["id"]: p for p, e in led.read() if "id" in e}
        assert led.verify().ok
        positions = []
        for body, answer in zip(bodies, answers):
            assert answer is not None
            events = body if isinstance(body, list) else [body]
            if any(e.get("principal") == "user:nobody" for e in events):
                assert answer.status_code == 400 and answer.json()["detail"].startswith("line 2: principal:")
                assert all(e["id"] not in by_id for e in events)
                continue
            if events[0]["type"] == "TokenUsed":
                assert answer.status_code == 403
                continue
            assert answer.status_code == 200, answer.text
            got = answer.json()
            assert got["written"] + got["skipped"] == len(events)
            if got["written"]:
                # Its own positions: its events, consecutive, the link at the last one the chain's.
                assert [by_id[e["id"]] for e in events] == list(range(got["first"], got["last"] + 1))
                assert got["position"] == got["last"]
                with led.store.transaction(write=False) as c:
                    c.execute("SELECT link FROM al_chain WHERE position = ?", (got["last"],))
                    assert got["link"] == c.fetchone()[0]
                positions += range(got["first"], got["last"] + 1)
        assert len(positions) == len(set(positions))
        landed = {
            e["id"]
            for b, a in zip(bodies, answers)
            if a is not None and a.status_code == 200
            for e in (b if isinstance(b, list) else [b])
        }
        assert set(by_id) == landed


def test_concurrent_changes_are_judged_each_on_its_own_and_refused_alone(served):
    """alice (org_admin) and bob (nothing) make tenants at once: bob's are 403, alice's land at their own positions;
    two of alice's name the same tenant, and whichever lands second is refused (400) as it would be alone."""
    asks = [("bob" if n % 3 == 1 else "alice", f"g{n if n % 6 != 5 else n - 3}") for n in range(18)]
    answers: list[httpx.Response | None] = [None] * len(asks)
    ready = threading.Barrier(len(asks))

    def post(i: int) -> None:
        who, tenant = asks[i]
        with httpx.Client(timeout=60) as client:
            ready.wait()
            for _ in range(10):
                answers[i] = client.post(
                    served.base + "/v1/changes",
                    json={"type": "TenantCreated", "tenant": tenant},
                    headers={"Authorization": f"Bearer {served.tokens[who]}"},
                )
                if answers[i].status_code != 503:  # a lock timeout on a loaded machine: nothing written, retried
                    break

    _all_at_once(post, len(asks))
    with AccessLedger.open(served.url) as led:
        assert led.verify().ok
        made = {p: e for p, e in led.read() if e["type"] == "TenantCreated" and e["tenant"].startswith("g")}
    landed: dict[str, int] = {}
    for (who, tenant), answer in zip(asks, answers):
        assert answer is not None
        if who == "bob":
            assert answer.status_code == 403 and answer.json()["error"] == "authority", answer.text
            continue
        if answer.status_code == 400:  # its tenant was made by the other request naming it
            assert tenant in {e["tenant"] for e in made.values()}, answer.text
            continue
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert got["written"] == 1 and got["first"] == got["last"] == got["position"]
        assert made[got["first"]] == {**made[got["first"]], "tenant": tenant, "actor": "user:alice"}
        landed[tenant] = got["first"]
    assert sorted(landed) == sorted({t for w, t in asks if w == "alice"})
    assert sorted(landed.values()) == sorted(made)
