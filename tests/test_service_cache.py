"""A worker's cached current state (projections.pit._Current) answers only for the state the database holds:
after an edited snapshot, a swapped file or a write by another worker, the answer is the one a worker with
nothing cached gives (the new truth, or today's refusal), never the cached one. And it is what makes a
question cheap: the stored state is decoded once per worker, and a request reads the head once."""

from __future__ import annotations

import hashlib
import sqlite3

import orjson
import pytest
from fastapi.testclient import TestClient

import projections.pit as pit
from access_ledger import api
from access_ledger.server import create_app
from ledger.app import AccessLedger
from ledger.integrity import KEY_ENV
from ledger.store import Store
from projections.permissions import state_to_data
from projections.pit import CURRENT, Timeline

AT = "2026-01-01T00:00:00Z"
LATER = "2026-01-02T00:00:00Z"
BOB_ADMIN = ("admin", "user:bob", "prod", None)


@pytest.fixture(autouse=True)
def no_seal_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def base(led: AccessLedger) -> None:
    """A small ledger with its current state stored (a snapshot every worker starts from)."""
    led.init(at=AT)
    led.create_tenant("prod", at=AT)
    for user in ("alice", "bob"):
        led.create_user(user, at=AT)
    led.assign_role("viewer", "user:alice", tenant="prod", at=AT)
    Timeline(led).current()  # saves the current projection
    assert led.snapshots.load(CURRENT) is not None


def cold(url: str) -> dict:
    """The current state as a worker with nothing cached builds it."""
    with AccessLedger.open(url) as led:
        return state_to_data(Timeline(led).current())


def truth(led: AccessLedger) -> dict:
    """The current state folded from the events alone."""
    return state_to_data(Timeline(led, persist=False).current())


def warm(led: AccessLedger) -> dict:
    return state_to_data(Timeline(led).current())


def current_row(led: AccessLedger) -> tuple[int, bytes]:
    position, data = led.snapshots.load(CURRENT)
    return int(position), data


def put_current(led: AccessLedger, data: bytes) -> None:
    with led.store.transaction(write=True) as c:
        c.execute("UPDATE al_snapshots SET data = ? WHERE name = ?", (data, CURRENT))


def forged(data: bytes, *, digest: bool = True) -> bytes:
    """The snapshot with an admin grant for bob in prod added. A MAC line is left as it was (nobody without the
    key can make one); a digest is made again to match, as anyone can (unless `digest` is False)."""
    tag, mac, body = data.split(b"\n", 2)
    d = orjson.loads(body)
    state = d["state"]
    state["sources"].append([1, AT, "user:mallory", None, "RoleAssigned"])
    state["assignments"].append([*BOB_ADMIN, None, len(state["sources"]) - 1])
    if "user:bob" not in state["holders"]:
        state["holders"].append("user:bob")
    body = orjson.dumps(d)
    if digest and mac.startswith(b"sha256:"):
        mac = b"sha256:" + hashlib.sha256(body).hexdigest().encode()
    return b"\n".join([tag, mac, body])


def same_length_edit(data: bytes) -> bytes:
    """The snapshot with bob's name changed to one of the same length, past its first pit.HEADER bytes: the
    row's length and header (its MAC or digest line) stay as they were."""
    start = data.index(b'"user:bob"', pit.HEADER)
    edited = data[:start] + b'"user:bo_"' + data[start + len(b'"user:bob"') :]
    assert len(edited) == len(data) and edited[: pit.HEADER] == data[: pit.HEADER] and edited != data
    return edited


def test_the_stored_state_is_decoded_once_while_the_log_stands_still(ledger_url, monkeypatch):
    led = AccessLedger.open(ledger_url, create=True)
    base(led)
    decoded = []
    real = pit.state_from_data
    monkeypatch.setattr(pit, "state_from_data", lambda d: decoded.append(1) or real(d))
    first = Timeline(led).current()
    for _ in range(5):
        assert Timeline(led).current() is first
    assert len(decoded) <= 1
    assert state_to_data(first) == truth(led)
    led.close()


def test_a_write_by_another_worker_is_answered_at_once(ledger_url):
    with AccessLedger.open(ledger_url, create=True) as led:
        base(led)
        before = Timeline(led).current()
        held = state_to_data(before)
        with AccessLedger.open(ledger_url) as other:  # another worker (its own connections)
            other.assign_role("admin", "user:bob", tenant="prod", at=LATER)
            head = other.head()
        after = Timeline(led).current()
        assert after.position == head and BOB_ADMIN in after.assignments
        assert state_to_data(after) == truth(led) == cold(ledger_url)
        assert state_to_data(before) == held  # a state once returned does not change under its holder
        with AccessLedger.open(ledger_url) as other:
            other.unassign_role("admin", "user:bob", tenant="prod", at=LATER)
        assert BOB_ADMIN not in Timeline(led).current().assignments


@pytest.mark.parametrize("key", [None, "k" * 32])
def test_an_edited_snapshot_is_answered_as_a_worker_with_nothing_cached_answers(ledger_url, monkeypatch, key):
    if key:
        monkeypatch.setenv(KEY_ENV, key)
    with AccessLedger.open(ledger_url, create=True) as led:
        base(led)
        led.create_user("carol", at=LATER)  # the cache is folded past the snapshot
        assert warm(led) == truth(led)
        position, data = current_row(led)
        edits = {
            "a forged grant": forged(data),
            "a forged grant, its digest left as it was": forged(data, digest=False),
            "junk": b"junk",
            "the snapshot of another position": data.replace(b'"position":%d' % position, b'"position":1'),
        }
        for edit, changed in edits.items():
            put_current(led, changed)
            got = warm(led)
            assert got == cold(ledger_url), edit
            if edit == "a forged grant" and key is None:
                # Without a seal key a forgery decodes and is used (check_snapshots, in verify, names it):
                # the cache answers what the database holds, as a worker with nothing cached does.
                assert BOB_ADMIN in Timeline(led).current().assignments
            else:
                assert got == truth(led), edit
            put_current(led, data)
            assert warm(led) == truth(led), edit


@pytest.mark.parametrize("key", [None, "k" * 32])
def test_an_edit_that_keeps_the_length_and_header_is_answered_as_a_worker_with_nothing_cached_answers(
    ledger_url, monkeypatch, key
):
    # The cache compares the row's length and header only (it never reads the body while it answers): the
    # header holds the body's MAC or SHA-256, so a worker without the cache refuses the edited body and
    # rebuilds from the events the very state the cache holds.
    if key:
        monkeypatch.setenv(KEY_ENV, key)
    with AccessLedger.open(ledger_url, create=True) as led:
        base(led)
        led.assign_role("viewer", "user:bob", tenant="prod", at=AT)
        Timeline(led).current()
        position, data = current_row(led)
        assert warm(led) == truth(led)
        put_current(led, same_length_edit(data))
        bodies = []
        real = led.snapshots.load_bound
        monkeypatch.setattr(led.snapshots, "load_bound", lambda name: bodies.append(name) or real(name))
        assert warm(led) == truth(led) == cold(ledger_url)
        assert bodies == []  # answered from the cache, the body not read
        # The worker without the cache refused the edited body and stored the state again, at the head.
        assert current_row(led)[0] == led.head() and current_row(led)[1] != same_length_edit(data)


def test_the_body_of_the_stored_state_is_read_once_per_worker(ledger_url, monkeypatch):
    with AccessLedger.open(ledger_url, create=True) as led:
        base(led)
    with AccessLedger.open(ledger_url) as led:  # a worker started on it
        bodies = []
        real = led.snapshots.load_bound
        monkeypatch.setattr(led.snapshots, "load_bound", lambda name: bodies.append(name) or real(name))
        Timeline(led).current()
        assert len(bodies) == 1
        for n in range(3):  # writes by this worker and another: folded on from the cache
            led.create_user(f"carol{n}", at=LATER)
            with AccessLedger.open(ledger_url) as other:
                other.create_user(f"dave{n}", at=LATER)
            assert state_to_data(Timeline(led).current()) == truth(led)
        assert len(bodies) == 1


def test_a_snapshot_stored_before_the_digest_is_read_and_stored_again_with_it(ledger_url):
    with AccessLedger.open(ledger_url, create=True) as led:
        base(led)
        position, data = current_row(led)
        tag, mac, body = data.split(b"\n", 2)
        assert mac == b"sha256:" + hashlib.sha256(body).hexdigest().encode()
        put_current(led, b"\n".join([tag, b"-", body]))  # as stored by the version before
    with AccessLedger.open(ledger_url) as led:
        assert state_to_data(Timeline(led).current()) == truth(led)
        assert current_row(led) == (position, data)


def test_a_chain_link_edited_under_the_snapshot_is_noticed(ledger_url):
    with AccessLedger.open(ledger_url, create=True) as led:
        base(led)
        put_current(led, forged(current_row(led)[1]))
        assert BOB_ADMIN in Timeline(led).current().assignments  # trusted (no key): the row is bound to the chain
        position = current_row(led)[0]
        with led.store.transaction(write=True) as c:
            c.execute("UPDATE al_chain SET link = ? WHERE position = ?", ("f" * 64, position))
        # The snapshot is no longer bound to the chain at its position: it is rebuilt from the events, as by a
        # worker with nothing cached.
        got = Timeline(led).current()
        assert BOB_ADMIN not in got.assignments


def _swap(led: AccessLedger, source_url: str) -> None:
    """Replace everything the ledger's database holds with another ledger's (the open connections stay)."""
    if not led.store.postgres:
        with sqlite3.connect(source_url) as src, sqlite3.connect(led.store.env["SQLITE_DBNAME"]) as dst:
            src.backup(dst)
        return
    import psycopg

    src_schema = source_url.rsplit("schema=", 1)[1]
    dst_schema = led.store.env["POSTGRES_SCHEMA"]
    with psycopg.connect(source_url.split("?")[0], autocommit=False) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (dst_schema,)
            ).fetchall()
        ]
        for table in tables:
            conn.execute(f'DELETE FROM "{dst_schema}"."{table}"')
            conn.execute(f'INSERT INTO "{dst_schema}"."{table}" SELECT * FROM "{src_schema}"."{table}"')
        conn.commit()


def test_a_swapped_file_is_answered_from_what_it_now_holds(url_factory):
    a_url, b_url = url_factory("a"), url_factory("b")
    with AccessLedger.open(a_url, create=True) as a, AccessLedger.open(b_url, create=True) as b:
        for led in (a, b):
            base(led)  # the same events: the same stored snapshot, byte for byte
        assert current_row(a) == current_row(b)
        a.assign_role("editor", "user:bob", tenant="prod", at=LATER)
        b.assign_role("admin", "user:bob", tenant="prod", at=LATER)  # the same position, another history
        assert a.head() == b.head()
        assert BOB_ADMIN not in Timeline(a).current().assignments
        want = truth(b)
        _swap(a, b_url)
        got = Timeline(a).current()
        assert BOB_ADMIN in got.assignments
        assert state_to_data(got) == want == cold(a_url)


def _client_of_ci(ledger_url: str) -> tuple[TestClient, dict]:
    """A service client holding a read token of service_account:ci on the base history, and a question."""
    with AccessLedger.open(ledger_url, create=True) as led:
        base(led)
        led.create_service_account("ci")
        token = api.create_token(led, "service_account:ci", ["read"], actor="system")["token"]
    client = TestClient(create_app(ledger_url), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    return client, {"principal": "user:alice", "action": "read", "resource": "model/m", "tenant": "prod"}


def test_a_question_through_the_service_reads_the_head_once(ledger_url, monkeypatch):
    client, question = _client_of_ci(ledger_url)
    assert client.post("/v1/check", json=question).json()["allowed"] is True  # the token's first use recorded
    reads = []
    real = Store._head_in
    monkeypatch.setattr(Store, "_head_in", lambda self, c: reads.append(1) or real(self, c))
    for body in (question, [question, {**question, "principal": "user:bob"}]):
        reads.clear()
        got = client.post("/v1/check", json=body)
        assert got.status_code == 200, got.text
        assert len(reads) == 1, body
    with AccessLedger.open(ledger_url) as other:  # another worker's write is seen by the next request
        other.assign_role("admin", "user:bob", tenant="prod")
        head = other.head()
    got = client.post("/v1/check", json={**question, "principal": "user:bob", "action": "delete"}).json()
    assert got["allowed"] is True and got["position"] == head


def test_with_the_seal_key_the_head_seal_is_read_once_per_head_position(ledger_url, monkeypatch):
    import ledger.integrity as integrity

    monkeypatch.setenv(KEY_ENV, "k" * 32)
    client, question = _client_of_ci(ledger_url)
    assert client.post("/v1/check", json=question).status_code == 200  # the token's first use recorded
    client.post("/v1/check", json=question)
    checked = []
    real = integrity.head_seal_problem
    monkeypatch.setattr(integrity, "head_seal_problem", lambda *a: checked.append(a[0]) or real(*a))
    for _ in range(3):
        assert client.post("/v1/check", json=question).status_code == 200
    assert checked == []  # the head stands still: nothing more is read
    with AccessLedger.open(ledger_url) as other:  # a keyed write by another worker: its seal, checked once
        other.create_user("carol")
        head = other.head()
    assert checked == [head - 1, head]  # (the write checked the head it extended, and `other` the new head)
    checked.clear()
    for _ in range(3):
        assert client.post("/v1/check", json=question).json()["position"] == head
    assert checked == [head]
