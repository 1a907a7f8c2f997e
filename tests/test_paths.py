"""Every access path: who-can, what-can and the review audit list each (principal, role, team, scope) path.

The example reproduces issue 24 item 1 (a self-granted admin hid a team path to a connector's
secret); the property test compares the three answers with a plain fold written here.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from strategies import COMMANDS, apply_commands
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from ledger.vocabulary import predefined_roles
from projections.answers import what_can, who_can
from projections.pit import Timeline
from reports.audits import run_audit
from reports.warehouse import Warehouse

runner = CliRunner()
T0 = "2026-01-01T00:00:00Z"
GRANTED = "2026-01-02T00:00:00Z"
REVOKED = "2026-01-05T00:00:00Z"


def run(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})


@pytest.fixture
def paths_ledger(ledger_url) -> str:
    """alice: a self-granted admin, and two roles through team platform; bob: a scoped grant and the team's."""
    with AccessLedger.open(ledger_url, create=True) as led:
        led.init(org="acme", at=T0)
        led.create_tenant("prod", at=T0)
        led.register_connector("aws", "prod", at=T0)
        for user in ("alice", "bob"):
            led.create_user(user, at=T0)
        led.create_team("platform", at=T0)
        led.add_team_member("platform", "user:alice", at=T0)
        led.add_team_member("platform", "user:bob", at=T0)
        led.create_role("secret-reader", "tenant", ["service_connector:read_secret_value"], at=T0)
        led.create_role("connector-ops", "tenant", ["service_connector:*"], at=T0)
        led.assign_role("admin", "user:alice", tenant="prod", actor="user:alice", reason="self", at=GRANTED)
        led.assign_role("secret-reader", "team:platform", tenant="prod", reason="SEC-1", at=GRANTED)
        led.assign_role("connector-ops", "team:platform", tenant="prod", reason="SEC-2", at=GRANTED)
        led.assign_role(
            "secret-reader", "user:bob", tenant="prod", resource="service_connector/aws", reason="SEC-3", at=GRANTED
        )
        led.unassign_role("admin", "user:alice", tenant="prod", reason="review Q4", at=REVOKED)
    return ledger_url


TEAM_PATHS = {
    ("user:alice", "connector-ops", "platform", None),
    ("user:alice", "secret-reader", "platform", None),
    ("user:bob", "connector-ops", "platform", None),
    ("user:bob", "secret-reader", "platform", None),
    ("user:bob", "secret-reader", None, "service_connector/aws"),
}
BEFORE_REVIEW = TEAM_PATHS | {("user:alice", "admin", None, None)}
WHO_CAN = ["who-can", "read_secret_value", "service_connector/aws", "--tenant", "prod"]


@pytest.mark.parametrize(
    "at, expected",
    [("2026-01-03T00:00:00Z", BEFORE_REVIEW), ("2026-01-06T00:00:00Z", TEAM_PATHS)],
    ids=["with-admin", "admin-revoked"],
)
def test_who_can_lists_every_path_in_json(paths_ledger, at, expected):
    result = run(paths_ledger, *WHO_CAN, "--at", at, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["principal"], r["role"], r["via_team"], r["resource_scope"]) for r in rows] == sorted(
        expected, key=lambda p: (p[0], p[2] or "", p[1], p[3] or "")
    )
    # Each row keeps the grant behind it: the assignment's position, actor and reason.
    with AccessLedger.open(paths_ledger) as led:
        grants = {
            (e["role"], e["principal"], e.get("resource")): (pos, e["actor"], e.get("reason"))
            for pos, e in led.read()
            if e["type"] == "RoleAssigned"
        }
    for r in rows:
        holder = f"team:{r['via_team']}" if r["via_team"] else r["principal"]
        assert (r["position"], r["granted_by"], r["reason"]) == grants[(r["role"], holder, r["resource_scope"])]


def test_who_can_lists_every_path_in_csv_and_table(paths_ledger):
    result = run(paths_ledger, *WHO_CAN, "--at", "2026-01-03T00:00:00Z", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {
        (r["principal"], r["role"], r["via_team"] or None, r["resource_scope"] or None) for r in rows
    } == BEFORE_REVIEW
    assert len(rows) == len(BEFORE_REVIEW)
    table = run(paths_ledger, *WHO_CAN, "--at", "2026-01-06T00:00:00Z")
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines() if "user:" in line]
    assert len(lines) == len(TEAM_PATHS)
    # The revoked admin hid these: after the review, alice still reads the secret through her team.
    assert sum("user:alice" in line and "platform" in line for line in lines) == 2
    assert not any("admin" in line for line in lines)


def test_what_can_lists_the_direct_and_team_paths(paths_ledger):
    result = run(
        paths_ledger, "what-can", "user:alice", "--tenant", "prod", "--at", "2026-01-03T00:00:00Z", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {(r["permission"], r["role"], r["via_team"], r["resource_scope"]) for r in rows} == {
        ("*:*", "admin", None, None),
        ("service_connector:read_secret_value", "secret-reader", "platform", None),
        ("service_connector:*", "connector-ops", "platform", None),
    }
    later = json.loads(
        run(
            paths_ledger,
            "what-can",
            "user:alice",
            "--tenant",
            "prod",
            "--at",
            "2026-01-06T00:00:00Z",
            "--format",
            "json",
        ).stdout
    )
    assert {(r["role"], r["via_team"]) for r in later} == {("secret-reader", "platform"), ("connector-ops", "platform")}


def test_audit_review_has_one_row_per_path(paths_ledger, tmp_path):
    result = run(
        paths_ledger,
        "audit",
        "review",
        "--at",
        "2026-01-03T00:00:00Z",
        "--tenant",
        "prod",
        "--warehouse",
        str(tmp_path / "w.duckdb"),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    keys = [(r["who"], r["what"], r["role"], r["via_team"], r["resource_scope"], r["from_role"]) for r in rows]
    assert len(keys) == len(set(keys))
    secret = {
        (r["who"], r["role"], r["via_team"], r["resource_scope"])
        for r in rows
        if r["what"].split(":")[0] in ("*", "service_connector")
        and r["what"].split(":")[1] in ("*", "read_secret_value")
    }
    assert secret == BEFORE_REVIEW


def test_audit_review_table_tells_each_path_apart(paths_ledger, tmp_path):
    """Two paths to one permission through the same role differ by resource scope or by the role in the
    chain that holds it: the terminal table shows both, so no two of its rows read the same."""
    later = "2026-01-07T00:00:00Z"
    with AccessLedger.open(paths_ledger) as led:
        led.create_user("carol", at=later)
        led.create_role("lead", "tenant", ["service_connector:read_secret_value"], base="secret-reader", at=later)
        led.assign_role("lead", "user:carol", tenant="prod", at=later)
        led.assign_role("lead", "user:carol", tenant="prod", resource="service_connector/aws", at=later)
    args = ["audit", "review", "--at", later, "--principal", "user:carol", "--warehouse", str(tmp_path / "w.duckdb")]
    rows = json.loads(run(paths_ledger, *args, "--format", "json").stdout)
    assert len(rows) == 4  # two scopes, each with the permission from lead and from its base
    table = run(paths_ledger, *args)
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if "who" in line and "what" in line)
    shown = [c.strip() for c in header.strip("┃│ ").replace("┃", "│").split("│")]
    assert {"resource_scope", "from_role"} <= set(shown)
    from reports.audits import AUDITS

    assert shown == [c for c in AUDITS["review"].brief if c in rows[0]]
    cells = [tuple(str(r[c]) for c in shown) for r in rows]
    assert len(set(cells)) == len(cells)


# -- against a plain fold -------------------------------------------------------------------------------


class Fold:
    """The state at an instant, folded here from the events by DESIGN section 3 (no projections code)."""

    def __init__(self, events: list[dict[str, Any]]):
        self.tenants: dict[str, bool] = {}
        self.active: dict[str, bool] = {}
        self.teams: dict[str, bool] = {}
        self.members: set[tuple[str, str]] = set()  # (team, member)
        self.roles: dict[str, tuple[str | None, set[str]]] = {}  # name -> (base, own permissions)
        self.assignments: dict[tuple[str, str, str | None, str | None], str | None] = {}  # key -> expires_at
        for ev in events:
            getattr(self, ev["type"], lambda ev: None)(ev)

    def OrganizationCreated(self, ev):
        for r in predefined_roles(ev["preset"]).values():
            self.roles[r.name] = (None, set(r.permissions))

    def TenantCreated(self, ev):
        self.tenants[ev["tenant"]] = True

    def TenantDeleted(self, ev):
        self.tenants[ev["tenant"]] = False

    def UserCreated(self, ev):
        self.active[f"user:{ev['user']}"] = True

    def UserDeactivated(self, ev):
        self.active[f"user:{ev['user']}"] = False

    def UserReactivated(self, ev):
        self.active[f"user:{ev['user']}"] = True

    def ServiceAccountCreated(self, ev):
        self.active[f"service_account:{ev['service_account']}"] = True

    def ServiceAccountDeactivated(self, ev):
        self.active[f"service_account:{ev['service_account']}"] = False

    def ServiceAccountReactivated(self, ev):
        self.active[f"service_account:{ev['service_account']}"] = True

    def TeamCreated(self, ev):
        self.teams[ev["team"]] = True

    def TeamDeleted(self, ev):
        self.teams[ev["team"]] = False

    def TeamMemberAdded(self, ev):
        self.members.add((ev["team"], ev["member"]))

    def TeamMemberRemoved(self, ev):
        self.members.discard((ev["team"], ev["member"]))

    def RoleCreated(self, ev):
        self.roles[ev["role"]] = (ev.get("base"), set(ev["permissions"]))

    def RoleDeleted(self, ev):
        del self.roles[ev["role"]]

    def RolePermissionsChanged(self, ev):
        base, perms = self.roles[ev["role"]]
        self.roles[ev["role"]] = (base, (perms - set(ev.get("remove", []))) | set(ev.get("add", [])))

    def RoleAssigned(self, ev):
        self.assignments[(ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"))] = ev.get("expires_at")

    def RoleUnassigned(self, ev):
        del self.assignments[(ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"))]

    def permissions(self, role: str) -> set[tuple[str, str]]:
        """(permission, the role in the chain that owns it)."""
        out: set[tuple[str, str]] = set()
        while role is not None and role in self.roles:
            base, perms = self.roles[role]
            out |= {(p, role) for p in perms}
            role = base
        return out

    def paths(self, instant: datetime) -> set[tuple]:
        """Every (principal, tenant, permission, resource scope, role, team, owning role) in force."""
        out = set()
        for principal, active in self.active.items():
            if not active:
                continue
            holders = [(principal, None)] + [
                (f"team:{t}", t) for t, m in self.members if m == principal and self.teams.get(t)
            ]
            for holder, via in holders:
                for (role, held_by, tenant, scope), expires in self.assignments.items():
                    if held_by != holder or role not in self.roles:
                        continue
                    if expires is not None and instant >= parse(expires):
                        continue
                    if tenant is not None and not self.tenants.get(tenant):
                        continue
                    for perm, owner in self.permissions(role):
                        if scope is None or perm.split(":")[0] in ("*", scope.split("/")[0]):
                            out.add((principal, tenant, perm, scope, role, via, owner))
        return out


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def covers(perm: str, rtype: str, action: str) -> bool:
    ptype, paction = perm.split(":")
    return ptype in ("*", rtype) and paction in ("*", action)


def event_time(i: int) -> str:
    # Two events per instant, on the hours the expiry instants of the strategies fall on.
    return (datetime(2026, 2, 2, tzinfo=UTC) + timedelta(hours=12 * (i // 2))).strftime("%Y-%m-%dT%H:%M:%SZ")


def prelude(led: AccessLedger) -> None:
    """Something to assign to and in, and a principal with a direct and a team path to start from."""
    at = "2026-02-01T00:00:00Z"
    led.init(at=at)
    for tenant in ("prod", "dev"):
        led.create_tenant(tenant, at=at)
    for user in ("alice", "bob", "carol"):
        led.create_user(user, at=at)
    led.create_service_account("ci", at=at)
    led.create_team("ml", at=at)
    led.add_team_member("ml", "user:alice", at=at)
    led.create_role("c1", "tenant", ["model:promote", "service_connector:read_secret_value"], base="viewer", at=at)
    led.assign_role("c1", "team:ml", tenant="prod", at=at)
    led.assign_role("admin", "user:alice", tenant="prod", at=at)


QUESTIONS = [
    ("read_secret_value", "service_connector/aws"),
    ("promote", "model/m1"),
    ("read", "model/m1"),
    ("update", "pipeline/p1"),
    ("delete", "secret/s"),
]
ORG_QUESTIONS = [("update", "member/x"), ("read", "tenant/prod")]
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "25"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=st.lists(COMMANDS, min_size=5, max_size=40), data=st.data())
def test_every_path_equals_a_plain_fold(url_factory, commands, data):
    led = AccessLedger.open(url_factory("paths"), create=True)
    try:
        prelude(led)
        apply_commands(led, commands, event_time)
        events = [e for _, e in led.read()]
        times = sorted({e["at"] for e in events} | {e["expires_at"] for e in events if e.get("expires_at")})
        instants = data.draw(
            st.lists(st.sampled_from(times + ["2026-12-31T00:00:00Z"]), min_size=1, max_size=4, unique=True)
        )
        timeline = Timeline(led)
        with Warehouse.open(led, ":memory:") as wh:
            wh.sync()
            for instant in instants:
                fold = Fold([e for e in events if parse(e["at"]) <= parse(instant)])
                expected = fold.paths(parse(instant))
                state = timeline.at_time(instant)
                for tenant in ("prod", "dev", None):
                    for action, resource in ORG_QUESTIONS if tenant is None else QUESTIONS:
                        rtype = resource.split("/")[0]
                        want = {
                            (p, role, via, scope)
                            for p, t, perm, scope, role, via, _ in expected
                            if t == tenant and (scope is None or scope == resource) and covers(perm, rtype, action)
                        }
                        rows = who_can(state, action, resource, tenant, instant)
                        got = [(r["principal"], r["role"], r["via_team"], r["resource_scope"]) for r in rows]
                        assert len(got) == len(set(got)), (instant, tenant, action, resource)
                        assert set(got) == want, (instant, tenant, action, resource)
                        event(f"a principal with several paths: {len({p for p, *_ in got}) < len(got)}")
                what = {
                    (p, r["tenant"], r["permission"], r["resource_scope"], r["role"], r["via_team"], r["from_role"])
                    for p in state.subjects()
                    for r in what_can(state, p, None, instant)
                }
                assert what == expected, instant
                review = run_audit(wh, "review", at=instant, sync=False).rows
                keys = [
                    (r["who"], r["tenant"], r["what"], r["resource_scope"], r["role"], r["via_team"], r["from_role"])
                    for r in review
                ]
                assert len(keys) == len(set(keys)), instant
                assert set(keys) == expected, instant
    finally:
        led.close()
