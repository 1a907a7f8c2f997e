"""Snapshots are derived data (DESIGN section 5): whatever someone writes into al_snapshots runs no
code and changes no answer it can be caught changing; check_snapshots names every row that disagrees
with the events."""

from __future__ import annotations

import ast
import copy
import hashlib
import os
import pickle
import random
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import projections.pit as pit
from access_ledger.cli import app
from ledger.integrity import KEY_ENV
from projections.permissions import BadSnapshot, PermissionState, state_from_data, state_to_data
from projections.pit import CHECKPOINT, CURRENT, FORMAT, Timeline, check_snapshots, states

LATER = "2027-01-01T00:00:00Z"
runner = CliRunner()


def minute(i: int) -> str:
    return f"2026-01-{2 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z"


@pytest.fixture(autouse=True)
def no_seal_key(monkeypatch):
    """Tests set the seal key themselves (not from the environment they run in)."""
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def built(led, ledger_url, monkeypatch):
    return build(led, monkeypatch), ledger_url


def build(led, monkeypatch):
    """A ledger of about 165 events with checkpoints every 50 positions and the current projection stored."""
    monkeypatch.setattr(pit, "CHECKPOINT_EVERY", 50)
    monkeypatch.setattr(pit, "SAVE_CURRENT_AFTER", 10)
    tick = iter(range(10_000))
    for tenant in ("prod", "dev"):
        led.create_tenant(tenant, at=minute(next(tick)))
    led.create_role("ds", "tenant", ["model:promote"], base="editor", at=minute(next(tick)))
    led.create_team("research", at=minute(next(tick)))
    led.create_user("eve", at=minute(next(tick)))
    for i in range(58):
        user = f"u{i}"
        led.create_user(user, at=minute(next(tick)))
        led.assign_role("ds" if i % 2 else "editor", f"user:{user}", "prod" if i % 3 else "dev", at=minute(next(tick)))
        if i % 4 == 0:
            led.add_team_member("research", f"user:{user}", at=minute(next(tick)))
        if i % 5 == 0:
            led.record_access(f"user:{user}", "read", "model/m1", "allowed", "prod", at=minute(next(tick)))
        if i % 7 == 3:
            led.unassign_role(
                "ds" if i % 2 else "editor", f"user:{user}", "prod" if i % 3 else "dev", at=minute(next(tick))
            )
        if i % 9 == 4:
            led.deactivate_user(user, at=minute(next(tick)))
    led.assign_role("ds", "team:research", "dev", at=minute(next(tick)))
    led.change_role("ds", add=["secret:read"], at=minute(next(tick)))
    assert led.head() > 150
    Timeline(led).at_position(led.head() - 1)  # saves the checkpoints
    Timeline(led).current()  # and the current projection
    assert [name for name, _, _ in rows(led)] == [f"{CHECKPOINT}{m:012d}" for m in (50, 100, 150)] + [CURRENT]
    assert check_snapshots(led) == []
    return led


def rows(led) -> list[tuple[str, int, bytes]]:
    with led.store.transaction(write=False) as c:
        c.execute("SELECT name, position, data FROM al_snapshots ORDER BY position, name")
        return [(name, int(position), bytes(data)) for name, position, data in c.fetchall()]


def put(led, snapshot_rows: list[tuple[str, int, bytes]]) -> None:
    """Make al_snapshots hold exactly these rows."""
    with led.store.transaction(write=True) as c:
        c.execute("DELETE FROM al_snapshots")
        for row in snapshot_rows:
            c.execute("INSERT INTO al_snapshots (name, position, data) VALUES (?, ?, ?)", row)


def positions(led) -> list[int]:
    head = led.head()
    return [0, 1, 49, 50, 51, 99, 100, 120, 150, head - 1, head]


def answers(led, url: str, *, persist: bool = True) -> dict:
    """What the point-in-time machinery and `check`/`who-can` answer (persist=False: a fresh fold)."""
    ps = positions(led)

    def timeline() -> Timeline:
        return Timeline(led, persist=persist)

    out = {
        "current": timeline().current(),
        "at": [timeline().at_position(p) for p in ps],
        "eve": [list(timeline().for_principal("user:eve", p).grants("user:eve", LATER, "prod")) for p in ps],
        "u4": [list(timeline().for_principal("user:u4", p).grants("user:u4", LATER, "dev")) for p in ps],
        "sweep": timeline().sweep(ps, lambda p: p, lambda state, p: copy.deepcopy(state)),
    }
    if persist:
        cli = [
            ["check", "user:eve", "delete", "secret/s", "--tenant", "prod", "--at", LATER, "--format", "json"],
            ["check", "user:u4", "read", "secret/s", "--tenant", "dev", "--position", "120", "--format", "json"],
            ["who-can", "delete", "secret/s", "--tenant", "prod", "--at", LATER, "--format", "json"],
            ["who-can", "read", "model/m1", "--tenant", "dev", "--position", "75", "--format", "json"],
        ]
        out["cli"] = [(r.exit_code, r.output) for r in (runner.invoke(app, ["--db", url, *args]) for args in cli)]
    return out


def expected(led, url: str) -> dict:
    """The answers of a fresh fold; the CLI's taken while every snapshot is still the one saved."""
    fresh = answers(led, url, persist=False)
    fresh["cli"] = answers(led, url)["cli"]
    return fresh


def parts(data: bytes) -> tuple[bytes, bytes, dict]:
    tag, mac, body = data.split(b"\n", 2)
    return tag, mac, orjson.loads(body)


def rebody(data: bytes, change, *, digest: bool = True) -> bytes:
    """The snapshot with its JSON body changed by change(body). A MAC line is left as it was (nobody without the
    key can make one); a SHA-256 line (no key) is made again to match, as anyone can (unless `digest` is False)."""
    tag, mac, body = parts(data)
    change(body)
    new = orjson.dumps(body)
    if digest and mac.startswith(b"sha256:"):
        mac = b"sha256:" + hashlib.sha256(new).hexdigest().encode()
    return b"\n".join([tag, mac, new])


class Plant:
    """A pickle that creates a file when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _set(path: list, value):
    def change(body):
        node = body
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return change


JUNK = {
    "pickle": lambda data, other, marker: pickle.dumps(Plant(marker)),
    "pickle behind the format tag": lambda data, other, marker: FORMAT + b"\n-\n" + pickle.dumps(Plant(marker)),
    "empty": lambda data, other, marker: b"",
    "random bytes": lambda data, other, marker: random.Random(len(data)).randbytes(400),
    "truncated": lambda data, other, marker: data[: len(data) // 2],
    "not UTF-8": lambda data, other, marker: FORMAT + b"\n-\n\xff\xfe{}",
    "deeply nested": lambda data, other, marker: FORMAT + b"\n-\n" + b"[" * 100_000 + b"]" * 100_000,
    "a JSON list": lambda data, other, marker: FORMAT + b"\n-\n[1, 2]",
    "tenants not booleans": lambda data, other, marker: rebody(data, _set(["state", "tenants"], {"prod": 1})),
    "position a boolean": lambda data, other, marker: rebody(data, _set(["state", "position"], True)),
    "position a float": lambda data, other, marker: rebody(data, _set(["position"], 50.0)),
    "source index out of range": lambda data, other, marker: rebody(
        data, _set(["state", "created", "user:eve"], 10**6)
    ),
    "negative source index": lambda data, other, marker: rebody(data, _set(["state", "created", "user:eve"], -1)),
    "short source": lambda data, other, marker: rebody(data, _set(["state", "sources", 0], [0, "", "system"])),
    "assignment of no holder": lambda data, other, marker: rebody(data, _set(["state", "holders"], [])),
    "unknown field": lambda data, other, marker: rebody(data, _set(["state", "extra"], 1)),
    "another log's link": lambda data, other, marker: rebody(data, _set(["link"], "f" * 64)),
    "a valid snapshot of another position": lambda data, other, marker: other,
}


@pytest.mark.parametrize("junk", list(JUNK))
def test_junk_in_any_snapshot_runs_no_code_and_changes_no_answer(built, junk, tmp_path):
    led, url = built
    marker = tmp_path / "pwned"
    want = expected(led, url)
    saved = rows(led)
    for i, (name, position, data) in enumerate(saved):
        other = saved[(i + 1) % len(saved)][2]
        put(led, saved[:i] + [(name, position, JUNK[junk](data, other, marker))] + saved[i + 1 :])
        reported = check_snapshots(led)
        assert len(reported) == 1 and f"snapshot {name} (position {position}) cannot be used" in reported[0], reported
        assert answers(led, url) == want, name
        assert not marker.exists()
        assert check_snapshots(led) == [], name  # rebuilt on use
    put(led, saved)


def grant_admin(body: dict) -> None:
    """An admin assignment for user:eve in prod, with made-up provenance."""
    state = body["state"]
    state["sources"].append([1, "2026-01-01T00:00:00Z", "user:ciso", "approved (made up)", "RoleAssigned"])
    state["assignments"].append(["admin", "user:eve", "prod", None, None, len(state["sources"]) - 1])
    if "user:eve" not in state["holders"]:
        state["holders"].append("user:eve")


def forged_rows(saved, i):
    name, position, data = saved[i]
    return saved[:i] + [(name, position, rebody(data, grant_admin))] + saved[i + 1 :]


def test_a_forged_grant_is_named_by_check_snapshots(built):
    led, url = built
    saved = rows(led)
    for i, (name, position, _) in enumerate(saved):
        put(led, forged_rows(saved, i))
        reported = check_snapshots(led)
        assert reported == [
            f"snapshot {name} (position {position}) does not match the events: answers that start "
            "from it are wrong until it is deleted (it is rebuilt on next use)"
        ]
        # Without a seal key the forgery decodes and is used: verify is what catches it, and
        # deleting the row undoes it.
        assert ("admin", "user:eve", "prod", None) in Timeline(led).at_position(position).assignments
        led.snapshots.delete(name)
        assert check_snapshots(led) == []
        assert answers(led, url, persist=False)["at"] == answers(led, url)["at"]
    put(led, saved)


def test_a_body_edited_without_its_digest_is_refused_and_rebuilt(built):
    # Without a key the MAC line holds the body's SHA-256: a body edited without it is never used.
    led, url = built
    want = expected(led, url)
    saved = rows(led)
    assert all(parts(data)[1].startswith(b"sha256:") for _, _, data in saved)
    for i, (name, position, data) in enumerate(saved):
        put(led, saved[:i] + [(name, position, rebody(data, grant_admin, digest=False))] + saved[i + 1 :])
        assert check_snapshots(led) == [
            f"snapshot {name} (position {position}) cannot be used (its body does not match its digest): "
            "rebuilt on next use"
        ]
        assert ("admin", "user:eve", "prod", None) not in Timeline(led).at_position(position).assignments
        assert answers(led, url) == want
    put(led, saved)


@pytest.fixture
def keyed_led(ledger_url, monkeypatch):
    """A ledger sealed under the key from its first event (no keyed write extends a head sealed without it)."""
    from ledger.app import AccessLedger

    monkeypatch.setenv(KEY_ENV, "k" * 32)
    ledger = AccessLedger.open(ledger_url, create=True)
    ledger.init(org="acme", at="2026-01-01T00:00:00Z")
    yield ledger
    ledger.close()


def test_with_a_seal_key_a_forged_grant_changes_no_answer(keyed_led, ledger_url, monkeypatch):
    led = keyed_led
    build(led, monkeypatch)
    want = expected(led, ledger_url)
    saved = rows(led)
    for i, (name, position, _) in enumerate(saved):
        put(led, forged_rows(saved, i))
        reported = check_snapshots(led)
        assert reported == [
            f"snapshot {name} (position {position}) cannot be used (its MAC is missing or wrong): rebuilt on next use"
        ]
        assert answers(led, ledger_url) == want, name
        assert check_snapshots(led) == []
    put(led, saved)


def test_with_a_seal_key_a_snapshot_saved_without_one_or_under_another_is_rebuilt(keyed_led, ledger_url, monkeypatch):
    from ledger.store import Store

    led, url = keyed_led, ledger_url
    build(led, monkeypatch)
    want = expected(led, url)
    key = os.environ[KEY_ENV]
    monkeypatch.delenv(KEY_ENV)  # saved by a process without the key
    put(led, [])
    Timeline(led).at_position(led.head() - 1)
    Timeline(led).current()
    unkeyed = rows(led)
    # Saved under another key, by its holder: with that key no read gets past the head's seal, so the rows are
    # made as they would write them, with that check left out.
    sealed_by_key = Store._sealed_by_key
    monkeypatch.setattr(Store, "_sealed_by_key", lambda *a: None)
    monkeypatch.setenv(KEY_ENV, "another key")
    put(led, [])
    Timeline(led).at_position(led.head() - 1)
    Timeline(led).current()
    other_key = rows(led)
    monkeypatch.setattr(Store, "_sealed_by_key", sealed_by_key)
    monkeypatch.setenv(KEY_ENV, key)
    for saved in (unkeyed, other_key):
        put(led, saved)
        reported = check_snapshots(led)
        assert len(reported) == len(saved) and all("its MAC is missing or wrong" in line for line in reported)
        assert answers(led, url) == want
        assert check_snapshots(led) == []
        assert all(parts(data)[1] != b"-" for _, _, data in rows(led))


def test_a_row_whose_name_or_position_does_not_match_its_data_is_not_trusted(built):
    led, url = built
    want = expected(led, url)
    saved = rows(led)
    head = led.head()
    by_name = {name: (position, data) for name, position, data in saved}
    p50, d50 = by_name[f"{CHECKPOINT}{50:012d}"]
    p100, d100 = by_name[f"{CHECKPOINT}{100:012d}"]
    cases = {
        "a checkpoint's data under another checkpoint's name and position": [(f"{CHECKPOINT}{100:012d}", p100, d50)],
        "a checkpoint whose position says another": [(f"{CHECKPOINT}{50:012d}", 100, d50)],
        "the current projection moved beyond the head": [(CURRENT, head + 5, by_name[CURRENT][1])],
    }
    for case, changed in cases.items():
        names = {name for name, _, _ in changed}
        put(led, [r for r in saved if r[0] not in names] + changed)
        reported = check_snapshots(led)
        assert len(reported) == 1 and "cannot be used" in reported[0], (case, reported)
        assert answers(led, url) == want, case
    put(led, saved + [("projection/v0/current", 3, b"old")])
    assert check_snapshots(led) == [
        "snapshot projection/v0/current (position 3) is not one this version uses: never read"
    ]
    assert answers(led, url) == want


def test_snapshots_round_trip_and_copies_are_independent(built):
    led, _ = built
    for position, state in states(led):
        data = orjson.loads(orjson.dumps(state_to_data(state)))
        assert state_from_data(data) == state, position
        copied = pit._copy(state)
        assert copied == state
    copied = pit._copy(state)
    copied.apply(
        led.head() + 1,
        {"type": "RolePermissionsChanged", "at": LATER, "actor": "x", "role": "ds", "add": ["secret:delete"]},
    )
    copied.apply(
        led.head() + 2, {"type": "TeamMemberAdded", "at": LATER, "actor": "x", "team": "research", "member": "user:eve"}
    )
    assert "secret:delete" not in state.roles["ds"].permissions
    assert "user:eve" not in state.members["research"] and "research" not in state.teams_of.get("user:eve", ())


def test_any_change_to_a_snapshots_data_decodes_or_is_refused(built):
    """Replace one node anywhere in a valid snapshot's data: the decoder refuses it (BadSnapshot) or
    returns a state every question can be asked of; never any other exception."""
    led, _ = built
    data = state_to_data(Timeline(led, persist=False).current())
    paths: list[list] = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, child in children:
            walk(child, path + [k])

    walk(data, [])
    values = [None, True, False, 0, -1, 2**40, 1.5, "", "x", "user:eve", [], {}, [0], {"x": 0}, [[]], ["a", 0]]
    rng = random.Random(7)
    refused = 0
    for _ in range(1500):
        mutated = copy.deepcopy(data)
        path = rng.choice(paths[1:])
        _set(path, rng.choice(values))(mutated)
        try:
            state = state_from_data(mutated)
        except BadSnapshot:
            refused += 1
            continue
        assert isinstance(state, PermissionState)
        for principal in [*state.principals, *(f"team:{t}" for t in state.teams)]:
            for tenant in [None, *state.tenants]:
                list(state.grants(principal, LATER, tenant))
            state.subset_for(principal)
        pit._copy(state)
    assert refused > 500


def test_no_module_in_projections_uses_pickle():
    for path in Path(pit.__file__).parent.rglob("*.py"):
        source = path.read_text()
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        imported |= {
            (node.module or "").split(".")[0]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"pickle", "_pickle", "cPickle", "dill", "shelve", "marshal", "copyreg"}, path
        assert "pickle" not in source, path
