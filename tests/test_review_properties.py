"""Access review campaigns against outside oracles (#18), on random histories run through the CLI:
the population is `audit review --at` the start, row for row; each reviewer's file of decisions is recorded as
one batch; after `review close` (by its owner) every item decided
(or left) `revoke` is denied by `check` at the close instant and after, and every kept item answers
`check` exactly as before the close."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reviews import run

from ledger.app import AccessLedger
from projections.answers import Question, check
from projections.pit import Timeline

T0 = "2026-01-01T00:00:00Z"
START = "2026-03-01T00:00:00Z"
LATER = "2099-01-01T00:00:00Z"
PEOPLE = ("ann", "ben", "cat", "dov")
ROLES = ("viewer", "editor", "admin")
TENANTS = ("prod", "staging")
_examples = itertools.count()

# A grant: (role, holder: a person, the CI service account or the team, tenant).
grants = st.lists(
    st.tuples(st.sampled_from(ROLES), st.sampled_from((*PEOPLE, "ci", "team")), st.sampled_from(TENANTS)),
    min_size=1,
    max_size=8,
    unique=True,
)


def _holder(name: str) -> str:
    return {"ci": "service_account:ci", "team": "team:research"}.get(name, f"user:{name}")


def _build(url: str, drawn: list[tuple[str, str, str]], members: list[str]) -> None:
    with AccessLedger.open(url, create=True) as led:
        led.init("acme", at=T0)
        for t in TENANTS:
            led.create_tenant(t, at=T0)
        for u in (*PEOPLE, "rev", "fallback"):
            led.create_user(u, at=T0)
        led.create_service_account("ci", at=T0)
        led.create_team("research", at=T0)
        for m in members:
            led.add_team_member("research", f"user:{m}", at=T0)
        for role, holder, tenant in drawn:
            led.assign_role(role, _holder(holder), tenant=tenant, at=T0)


def _probe(state, role: str) -> tuple[str, str]:
    """An action and a resource that the role's first permission allows."""
    perm = state.effective_permissions(role)[0][0]
    rtype, action = perm.split(":", 1)
    return ("read" if action == "*" else action), f"{'model' if rtype == '*' else rtype}/probe"


def _paths(state, item: dict, instant: str) -> list[tuple]:
    """The paths by which `check` lets the item's principal use the item's first permission."""
    action, resource = _probe(state, item["role"])
    answer = check(state, Question(item["principal"], action, resource, item["tenant"]), instant)
    return sorted(((p["role"], p["via_team"], p["tenant"], p["permission"]) for p in answer["paths"]), key=str)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    drawn=grants,
    members=st.lists(st.sampled_from(PEOPLE), max_size=3, unique=True),
    decisions=st.lists(st.sampled_from(["keep", "revoke", None]), min_size=30, max_size=30),
    undecided=st.sampled_from(["--keep-undecided", "--revoke-undecided", "--leave-exceptions"]),
)
def test_population_is_audit_review_and_close_revokes_exactly_the_revoked_items(
    url_factory, tmp_path, drawn, members, decisions, undecided
):
    url = url_factory(f"prop{next(_examples)}")
    _build(url, drawn, members)
    started = run(
        url,
        "review",
        "start",
        "Q",
        "--tenant",
        "prod",
        "--tenant",
        "staging",
        "--reviewer",
        "user:rev",
        "--fallback-reviewer",
        "user:fallback",
        "--at",
        START,
    )
    assert started.exit_code == 0, started.output
    items = json.loads(run(url, "review", "items", "Q", "--format", "json").stdout)

    # The population is what `audit review` lists at the start instant, row for row.
    warehouse = str(tmp_path / f"w{next(_examples)}.duckdb")
    listed = run(url, "audit", "review", "--at", START, "--format", "json", "--warehouse", warehouse)
    assert listed.exit_code == 0, listed.output
    held = {
        (r["who"], r["role"], r["tenant"], r["via_team"]) for r in json.loads(listed.stdout) if r["tenant"] in TENANTS
    }
    assert sorted(held, key=str) == sorted({(r["principal"], r["role"], r["tenant"], r["via"]) for r in items}, key=str)
    assert len(items) == len({(r["principal"], r["role"], r["tenant"], r["via"]) for r in items})

    # Decide some items, as their reviewers, in one batch each. The items one team membership gives are
    # decided alike (a revoke removes the membership: mixing them is refused, see test_reviews.py).
    group = {r["item"]: (r["via"], r["principal"]) if r["via"] else r["item"] for r in items}
    files: dict[str, str] = {}  # reviewer -> SHA-256 of the file they decided
    first = {}
    for r, d in zip(items, decisions):
        first.setdefault(group[r["item"]], d)
    chosen = {r["item"]: first[group[r["item"]]] for r in items if first[group[r["item"]]] is not None}
    for reviewer in {r["reviewer"] for r in items}:
        mine = [r for r in items if r["reviewer"] == reviewer and r["item"] in chosen]
        if not mine:
            continue
        path = tmp_path / f"d{next(_examples)}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["item", "decision", "reason"])
            w.writerows([r["item"], chosen[r["item"]], "checked"] for r in mine)
        decided = run(url, "review", "decide", "Q", "--batch", str(path), "--actor", reviewer)
        assert decided.exit_code == 0, decided.output
        files[reviewer] = hashlib.sha256(path.read_bytes()).hexdigest()

    with AccessLedger.open(url) as led:
        before = Timeline(led, persist=False).current()
        instant = led.newest_at()
        recorded = [ev for _, ev in led.read_changes() if ev["type"] == "ReviewDecided"]
    # Each file is one batch: its decisions carry one id of their own and the file's SHA-256.
    assert {ev["item"] for ev in recorded} == set(chosen)
    assert {(ev["reviewer"], ev["batch_sha256"]) for ev in recorded} == set(files.items())
    assert len({ev["batch"] for ev in recorded}) == len(files)
    assert all(len({ev["batch"] for ev in recorded if ev["reviewer"] == who}) == 1 for who in files)
    # The owner (`system`, who started it) closes it, saying what undecided items become.
    closed = run(url, "review", "close", "Q", undecided)
    assert closed.exit_code == 0, closed.output
    with AccessLedger.open(url) as led:
        after = Timeline(led, persist=False).current()
        close_at = led.newest_at()
    fallback = {"--leave-exceptions": None, "--keep-undecided": "keep", "--revoke-undecided": "revoke"}[undecided]
    for r in items:
        outcome = chosen.get(r["item"], fallback)
        mine = (r["role"], r["via"], r["tenant"])
        for at in (close_at, LATER):
            paths = _paths(after, r, at)
            if outcome == "revoke":
                # Denied through the item's own grant: no path by that role, team and tenant remains.
                assert all(p[:3] != mine for p in paths), (r, paths)
            else:
                # Kept (or left as an exception): `check` allows it through the item's grant as before the close.
                was = _paths(before, r, instant if at == close_at else at)
                assert [p for p in paths if p[:3] == mine] == [p for p in was if p[:3] == mine] != [], (r, outcome)
