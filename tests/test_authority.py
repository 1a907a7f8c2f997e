"""Authority of a change (DESIGN section 3): `audit authority`, `init --enforce-authority`, the rules files."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger import errors as E
from ledger.app import AccessLedger
from ledger.authority import default_rules_text
from ledger.timeutil import format_instant, now
from reports.audits import run_audit
from reports.warehouse import Warehouse

runner = CliRunner()


def d(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


def authority(led: AccessLedger, tmp_path, **params) -> list[dict]:
    with Warehouse.open(led, tmp_path / "w.duckdb") as wh:
        return run_audit(wh, "authority", **params).rows


def brief(rows: list[dict]) -> list[tuple]:
    return [(r["finding"], r["who"], r["position"], r["event"], r["permission"]) for r in rows]


def staff(led: AccessLedger) -> None:
    """Positions 2-5: tenant prod, users vera, bob and lee (by system, the bootstrap)."""
    led.create_tenant("prod", at=d(1))
    for user in ("vera", "bob", "lee"):
        led.create_user(user, at=d(1))


def test_a_viewer_assigning_admin_is_an_unauthorised_change(led, tmp_path):
    staff(led)
    led.assign_role("viewer", "user:vera", tenant="prod", at=d(2))  # 6
    led.assign_role("admin", "user:bob", tenant="prod", at=d(3), actor="user:vera")  # 7
    rows = authority(led, tmp_path)
    assert brief(rows) == [("unauthorised-change", "user:vera", 7, "RoleAssigned", "member:update")]
    row = rows[0]
    assert row["where"] == "tenant:prod"
    assert row["what"] == "RoleAssigned admin to user:bob in tenant prod"
    assert row["needed"] == "member:update in the organization or in tenant prod"
    assert row["since"] == d(3) and row["positions"] == [7]


def test_a_leaver_granting_admin_is_a_change_by_an_inactive_actor(led, tmp_path):
    staff(led)
    led.assign_role("org_admin", "user:lee", at=d(2))  # 6
    led.assign_role("viewer", "user:bob", tenant="prod", at=d(3), actor="user:lee")  # 7: allowed
    led.deactivate_user("lee", at=d(4), reason="HR-1 leaver")  # 8
    led.assign_role("admin", "user:bob", tenant="prod", at=d(5), actor="user:lee")  # 9
    led.create_user("mallory", at=d(6), actor="user:ghost")  # 10
    rows = authority(led, tmp_path)
    assert brief(rows) == [
        ("change-by-inactive-actor", "user:lee", 9, "RoleAssigned", "member:update"),
        ("change-by-inactive-actor", "user:ghost", 10, "UserCreated", "member:create"),
    ]
    assert rows[0]["detail"] == f"user:lee was deactivated at {d(4)} (position 8)"
    assert rows[1]["detail"] == "user:ghost is not recorded in the ledger at that instant"


def test_system_is_exempt_and_held_permissions_authorise(led, tmp_path):
    staff(led)
    led.register_connector("aws", "prod", at=d(1), actor="system")  # 6
    led.assign_role("admin", "user:vera", tenant="prod", at=d(2))  # 7
    led.assign_role("org_editor", "user:bob", at=d(2))  # 8
    # vera's tenant admin (*:*) matches member:update in prod and service_connector:delete there ...
    led.assign_role("viewer", "user:lee", tenant="prod", at=d(3), actor="user:vera")  # 9
    led.delete_connector("aws", "prod", at=d(3), actor="user:vera")  # 10
    # ... and bob's org_editor creates tenants and users, but cannot delete a tenant.
    led.create_tenant("dev", at=d(4), actor="user:bob")  # 11
    led.create_user("zoe", at=d(4), actor="user:bob")  # 12
    led.delete_tenant("dev", at=d(5), actor="user:bob")  # 13
    # vera's admin in prod does not reach the organization: no org role assignment.
    led.assign_role("org_viewer", "user:lee", at=d(5), actor="user:vera")  # 14
    rows = authority(led, tmp_path)
    assert brief(rows) == [
        ("unauthorised-change", "user:bob", 13, "TenantDeleted", "tenant:delete"),
        ("unauthorised-change", "user:vera", 14, "RoleAssigned", "member:update"),
    ]
    assert rows[1]["needed"] == "member:update in the organization"


def test_the_period_bounds_the_changes_judged(led, tmp_path):
    staff(led)
    led.create_user("x", at=d(3), actor="user:vera")  # 6
    led.create_user("y", at=d(5), actor="user:vera")  # 7
    assert [r["position"] for r in authority(led, tmp_path, start=d(4))] == [7]
    assert [r["position"] for r in authority(led, tmp_path, end=d(4))] == [6]


def test_audit_authority_command_lists_the_unauthorised_change(led, tmp_path):
    staff(led)
    led.assign_role("viewer", "user:vera", tenant="prod", at=d(2))
    led.assign_role("admin", "user:bob", tenant="prod", at=d(3), actor="user:vera")
    result = runner.invoke(
        app,
        [
            "--db",
            led.store.url,
            "audit",
            "authority",
            "--period",
            "2026-01",
            "--warehouse",
            str(tmp_path / "w.duckdb"),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert brief(json.loads(result.stdout)) == [
        ("unauthorised-change", "user:vera", 7, "RoleAssigned", "member:update")
    ]


def test_a_rules_file_replaces_the_shipped_rules(led, tmp_path):
    staff(led)
    led.assign_role("org_editor", "user:vera", at=d(2))
    led.create_user("zoe", at=d(3), actor="user:vera")  # 7: member:create, held
    text = default_rules_text("zenml-pro").replace('permission = "member:create"', 'permission = "member:delete"')
    rules = tmp_path / "strict.toml"
    rules.write_text(text)
    assert authority(led, tmp_path) == []
    assert brief(authority(led, tmp_path, authority_rules=rules)) == [
        ("unauthorised-change", "user:vera", 7, "UserCreated", "member:delete")
    ]


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda t: t.replace('events = ["TeamDeleted"]', 'events = ["TeamDeletedX"]'),
            "rule 7: 'TeamDeletedX' is not a change event",
        ),
        (
            lambda t: t.replace(
                '[[rule]]\nevents = ["TeamDeleted"]\npermission = "team:delete"\nin = ["organization"]\n', ""
            ),
            "no rule for TeamDeleted (every change event needs one)",
        ),
        (
            lambda t: t.replace('permission = "tenant:create"', 'permission = "tenant:*"'),
            "rule 1: permission 'tenant:*' is not TYPE:ACTION (no wildcards in rules)",
        ),
        (
            lambda t: default_rules_text("zenml-oss"),
            "the rules are for the zenml-oss preset; this ledger uses zenml-pro",
        ),
    ],
)
def test_audit_authority_refuses_a_bad_rules_file_in_one_line(led, tmp_path, change, message):
    rules = tmp_path / "bad.toml"
    rules.write_text(change(default_rules_text("zenml-pro")))
    result = runner.invoke(
        app,
        ["--db", led.store.url, "audit", "authority", "--rules", str(rules), "--warehouse", str(tmp_path / "w.duckdb")],
    )
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_zenml_oss_changes_need_write(ledger_url, tmp_path):
    with AccessLedger.open(ledger_url, create=True) as led:
        led.init(preset="zenml-oss", at=d(1))
        led.create_user("ada", at=d(1))
        led.create_user("gus", at=d(1))
        led.assign_role("admin", "user:ada", at=d(1))
        led.assign_role("guest", "user:gus", at=d(1))
        led.create_team("ml", at=d(2), actor="user:ada")  # 6: admin holds *:write
        led.create_team("ops", at=d(2), actor="user:gus")  # 7: guest does not
        assert brief(authority(led, tmp_path)) == [
            ("unauthorised-change", "user:gus", 7, "TeamCreated", "organization:write")
        ]


# -- enforcement ---------------------------------------------------------------------------------


def cli(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args])


@pytest.fixture
def enforced(ledger_url):
    """A ledger created with --enforce-authority: vera holds viewer in prod, ops holds admin there, lee left."""
    result = cli(ledger_url, "init", "--org", "acme", "--enforce-authority", "--actor", "system")
    assert result.exit_code == 0, result.output
    with AccessLedger.open(ledger_url) as led:
        assert led.enforces_authority
        led.create_tenant("prod")
        for user in ("vera", "bob", "lee"):
            led.create_user(user)
        led.create_service_account("ops")
        led.create_team("ml")
        led.assign_role("viewer", "user:vera", tenant="prod")
        led.assign_role("admin", "service_account:ops", tenant="prod")
        led.assign_role("org_admin", "user:lee")
        led.deactivate_user("lee")
    return ledger_url


def snapshot(url: str) -> tuple[int, list[bytes]]:
    with AccessLedger.open(url) as led:
        return led.head(), list(led.export_lines())


LACKS = "actor: user:vera lacks {} (needed for {}; this ledger enforces authority)"
REFUSED = [
    (["tenant", "create", "dev"], "tenant:create in the organization", "TenantCreated"),
    (["tenant", "rename", "prod", "Production"], "tenant:update in the organization", "TenantRenamed"),
    (["tenant", "delete", "prod"], "tenant:delete in the organization", "TenantDeleted"),
    (["user", "create", "zoe"], "member:create in the organization", "UserCreated"),
    (["user", "deactivate", "bob"], "member:update in the organization", "UserDeactivated"),
    (["service-account", "create", "ci"], "member:create in the organization", "ServiceAccountCreated"),
    (["team", "create", "ops"], "team:create in the organization", "TeamCreated"),
    (["team", "add-member", "ml", "user:bob"], "team:update in the organization", "TeamMemberAdded"),
    (["team", "delete", "ml"], "team:delete in the organization", "TeamDeleted"),
    (
        ["role", "create", "r1", "--scope", "tenant", "-p", "model:read"],
        "role:create in the organization",
        "RoleCreated",
    ),
    (
        ["role", "assign", "admin", "--to", "user:bob", "--tenant", "prod"],
        "member:update in the organization or in tenant 'prod'",
        "RoleAssigned",
    ),
    (["role", "assign", "org_admin", "--to", "user:vera"], "member:update in the organization", "RoleAssigned"),
    (
        ["role", "unassign", "viewer", "--from", "user:vera", "--tenant", "prod"],
        "member:update in the organization or in tenant 'prod'",
        "RoleUnassigned",
    ),
    (
        ["connector", "register", "aws", "--tenant", "prod"],
        "service_connector:create in tenant 'prod'",
        "ConnectorRegistered",
    ),
]


@pytest.mark.parametrize("args,missing,event", REFUSED, ids=[" ".join(a[:2]) for a, _, _ in REFUSED])
def test_enforced_ledger_refuses_a_change_command_the_actor_may_not_make(enforced, args, missing, event):
    before = snapshot(enforced)
    result = cli(enforced, *args, "--actor", "user:vera")
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == [f"Error: {LACKS.format(missing, event)}"]
    assert snapshot(enforced) == before


def test_enforced_ledger_refuses_a_leaver_and_accepts_an_authorised_actor(enforced):
    before = snapshot(enforced)
    result = cli(enforced, "role", "assign", "admin", "--to", "user:bob", "--tenant", "prod", "--actor", "user:lee")
    assert result.exit_code != 0
    assert result.stderr.strip() == (
        "Error: actor: user:lee is deactivated and may make no change (this ledger enforces authority)"
    )
    assert snapshot(enforced) == before
    result = cli(
        enforced, "role", "assign", "editor", "--to", "user:bob", "--tenant", "prod", "--actor", "service_account:ops"
    )
    assert result.exit_code == 0, result.output
    result = cli(enforced, "connector", "register", "aws", "--tenant", "prod", "--actor", "service_account:ops")
    assert result.exit_code == 0, result.output


def test_enforced_import_refuses_the_whole_file_at_an_unauthorised_line(enforced, tmp_path):
    before = snapshot(enforced)
    at = format_instant(now())
    lines = [
        {"type": "UserCreated", "at": at, "actor": "system", "user": "amy"},
        {
            "type": "RoleAssigned",
            "at": at,
            "actor": "service_account:ops",
            "role": "viewer",
            "principal": "user:amy",
            "tenant": "prod",
        },
        {
            "type": "RoleAssigned",
            "at": at,
            "actor": "user:vera",
            "role": "admin",
            "principal": "user:amy",
            "tenant": "prod",
        },
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = cli(enforced, "import", str(path))
    assert result.exit_code != 0
    assert result.stderr.strip() == (
        "Error: line 3: " + LACKS.format("member:update in the organization or in tenant 'prod'", "RoleAssigned")
    )
    assert snapshot(enforced) == before
    # Within one import, what the earlier lines granted counts: amy, given admin by ops, may assign.
    lines[2]["actor"] = "service_account:ops"
    lines.append(
        {
            "type": "RoleAssigned",
            "at": at,
            "actor": "user:amy",
            "role": "editor",
            "principal": "user:bob",
            "tenant": "prod",
        }
    )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = cli(enforced, "import", str(path))
    assert result.exit_code == 0, result.output
    assert snapshot(enforced)[0] == before[0] + 4


def test_enforcement_round_trips_through_export_and_import(url_factory, tmp_path):
    src = url_factory("src")
    with AccessLedger.open(src, create=True) as led:
        led.init(org="acme", at=d(1), enforce_authority=True)
        led.create_tenant("prod", at=d(1))
        led.create_user("vera", at=d(1))
        led.assign_role("viewer", "user:vera", tenant="prod", at=d(2))
        with pytest.raises(E.Unauthorised):
            led.create_user("zoe", at=d(3), actor="user:vera")
        exported = list(led.export_lines())
    assert b'"enforce_authority":true' in exported[0]
    dst = url_factory("dst")
    with AccessLedger.open(dst, create=True) as led:
        led.import_lines(exported)
        assert led.enforces_authority
        with pytest.raises(E.Unauthorised, match="lacks member:create in the organization"):
            led.create_user("zoe", at=d(3), actor="user:vera")
        assert list(led.export_lines()) == exported


def test_without_enforcement_mirrored_history_is_accepted(led):
    staff(led)
    assert not led.enforces_authority
    led.assign_role("admin", "user:bob", tenant="prod", at=d(3), actor="user:vera")  # recorded; the audit judges it
    assert led.head() == 6


def test_enforced_ledger_refuses_an_actor_never_recorded_on_import(url_factory):
    url = url_factory()
    lines = [
        {
            "type": "OrganizationCreated",
            "at": d(1),
            "actor": "system",
            "name": "acme",
            "preset": "zenml-pro",
            "enforce_authority": True,
        },
        {"type": "TenantCreated", "at": d(1), "actor": "user:ghost", "tenant": "prod"},
    ]
    with AccessLedger.open(url, create=True) as led:
        with pytest.raises(E.Unauthorised) as refused:
            led.import_lines([json.dumps(x) for x in lines])
        assert str(refused.value) == (
            "line 2: actor: user:ghost is not recorded in the ledger and may make no "
            "change (this ledger enforces authority)"
        )
        assert led.head() == 0


# -- against an independent implementation of the default rules (DESIGN section 3's table) -----------

from datetime import datetime  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from strategies import commands  # noqa: E402

from ledger.vocabulary import predefined_roles  # noqa: E402

# The table of DESIGN section 3, written out again: event -> (permission, may it be held in the event's tenant).
TABLE = {
    "TenantCreated": ("tenant:create", False),
    "TenantRenamed": ("tenant:update", False),
    "TenantDeleted": ("tenant:delete", False),
    "UserCreated": ("member:create", False),
    "ServiceAccountCreated": ("member:create", False),
    **{f"{k}{w}": ("member:update", False) for k in ("User", "ServiceAccount") for w in ("Deactivated", "Reactivated")},
    "TeamCreated": ("team:create", False),
    "TeamDeleted": ("team:delete", False),
    "TeamMemberAdded": ("team:update", False),
    "TeamMemberRemoved": ("team:update", False),
    "RoleCreated": ("role:create", False),
    "RolePermissionsChanged": ("role:update", False),
    "RoleDeleted": ("role:delete", False),
    "RoleAssigned": ("member:update", True),
    "RoleUnassigned": ("member:update", True),
    "ConnectorRegistered": ("service_connector:create", True),
    "ConnectorDeleted": ("service_connector:delete", True),
}
ONLY_IN_TENANT = {"ConnectorRegistered", "ConnectorDeleted"}
ACTORS = st.sampled_from(
    ["system", "system", "user:alice", "user:bob", "user:carol", "service_account:ci", "user:ghost"]
)


# Changes that meet the prelude's edges: the connector bob's admin is narrowed to, tenant dev of team ml.
NEW_NAMES = st.sampled_from(["dan", "eve", "fay", "gus", "hal", "ivy", "jo", "kim"])
EXTRA = st.one_of(
    st.tuples(st.just("delete_connector"), st.just("aws"), st.just("prod")),
    st.tuples(st.just("register_connector"), st.sampled_from(["aws", "gcp"]), st.sampled_from(["prod", "dev"])),
    st.tuples(
        st.sampled_from(["assign_role", "unassign_role"]),
        st.sampled_from(["viewer", "editor"]),
        st.sampled_from(["user:carol", "user:bob"]),
        st.sampled_from(["prod", "dev"]),
    ),
    st.tuples(
        st.sampled_from(["assign_role", "unassign_role"]),
        st.sampled_from(["org_viewer", "o1"]),
        st.sampled_from(["user:carol", "user:bob", "team:ml"]),
    ),
    st.tuples(st.sampled_from(["create_user", "create_team"]), NEW_NAMES),
    st.tuples(
        st.sampled_from(["add_team_member", "remove_team_member"]),
        st.just("ml"),
        st.sampled_from(["user:bob", "user:carol", "service_account:ci"]),
    ),
    st.tuples(st.sampled_from(["deactivate_user", "reactivate_user"]), st.sampled_from(["alice", "bob", "carol"])),
)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Oracle:
    """A plain fold of the events and the default rules of DESIGN section 3, judged before each change."""

    def __init__(self) -> None:
        self.tenants: dict[str, bool] = {}
        self.active: dict[str, bool] = {}
        self.teams: dict[str, bool] = {}
        self.members: dict[str, set[str]] = {}
        self.roles: dict[str, tuple[str | None, list[str]]] = {}
        self.grants: dict[tuple, str | None] = {}

    def judge(self, ev: dict) -> tuple[str, str] | None:
        """(finding, permission) if the change is forbidden, else None."""
        if ev["type"] not in TABLE or ev["actor"] == "system":
            return None
        perm, tenant_too = TABLE[ev["type"]]
        actor = ev["actor"]
        if not self.active.get(actor, False):
            return ("change-by-inactive-actor", perm)
        holders = {actor} | {f"team:{t}" for t, ms in self.members.items() if actor in ms and self.teams.get(t)}
        tenant = ev.get("tenant") if tenant_too else None
        in_org = ev["type"] not in ONLY_IN_TENANT or tenant is None
        ptype, paction = perm.split(":")
        for (role, holder, gt, res), expires in self.grants.items():
            if holder not in holders or (expires is not None and not _t(ev["at"]) < _t(expires)):
                continue
            if gt is None and not in_org:
                continue
            if gt is not None and (gt != tenant or not self.tenants.get(gt)):
                continue
            if res is not None and res != f"{ptype}/{ev.get('connector')}":
                continue
            chain, r = [], role
            while r is not None and r in self.roles and r not in chain:
                chain.append(r)
                r = self.roles[r][0]
            for have in (p for c in chain for p in self.roles[c][1]):
                t, a = have.split(":")
                if res is not None and t not in ("*", res.split("/")[0]):
                    continue
                if t in ("*", ptype) and a in ("*", paction):
                    return None
        return ("unauthorised-change", perm)

    def apply(self, ev: dict) -> None:
        k = ev["type"]
        if k == "OrganizationCreated":
            for r in predefined_roles(ev["preset"]).values():
                self.roles[r.name] = (None, list(r.permissions))
        elif k == "TenantCreated":
            self.tenants[ev["tenant"]] = True
        elif k == "TenantDeleted":
            self.tenants[ev["tenant"]] = False
        elif k in ("UserCreated", "UserReactivated"):
            self.active[f"user:{ev['user']}"] = True
        elif k == "UserDeactivated":
            self.active[f"user:{ev['user']}"] = False
        elif k in ("ServiceAccountCreated", "ServiceAccountReactivated"):
            self.active[f"service_account:{ev['service_account']}"] = True
        elif k == "ServiceAccountDeactivated":
            self.active[f"service_account:{ev['service_account']}"] = False
        elif k == "TeamCreated":
            self.teams[ev["team"]] = True
        elif k == "TeamDeleted":
            self.teams[ev["team"]] = False
        elif k == "TeamMemberAdded":
            self.members.setdefault(ev["team"], set()).add(ev["member"])
        elif k == "TeamMemberRemoved":
            self.members[ev["team"]].discard(ev["member"])
        elif k == "RoleCreated":
            self.roles[ev["role"]] = (ev.get("base"), list(ev["permissions"]))
        elif k == "RolePermissionsChanged":
            base, perms = self.roles[ev["role"]]
            perms = [p for p in perms if p not in ev.get("remove", [])] + list(ev.get("add", []))
            self.roles[ev["role"]] = (base, perms)
        elif k == "RoleDeleted":
            del self.roles[ev["role"]]
        elif k == "RoleAssigned":
            self.grants[(ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"))] = ev.get("expires_at")
        elif k == "RoleUnassigned":
            del self.grants[(ev["role"], ev["principal"], ev.get("tenant"), ev.get("resource"))]


def _history(led: AccessLedger, drawn: list) -> None:
    """The random commands, each by a drawn actor, two events an instant; refused ones are skipped."""
    at = "2026-02-01T00:00:00Z"
    led.init(at=at)
    # Powers that run out or are narrowed, so that random actors often stand at their edges.
    for tenant in ("prod", "dev"):
        led.create_tenant(tenant, at=at)
    for user in ("alice", "bob", "carol"):
        led.create_user(user, at=at)
    led.create_service_account("ci", at=at)
    led.create_team("ml", at=at)
    led.add_team_member("ml", "user:alice", at=at)
    led.register_connector("aws", "prod", at=at)
    led.create_role("o1", "organization", ["member:*"], at=at)
    led.assign_role("org_editor", "user:alice", expires_at="2026-02-02T09:00:00Z", at=at)
    led.assign_role("admin", "user:bob", tenant="prod", resource="service_connector/aws", at=at)
    led.assign_role("viewer", "user:bob", tenant="dev", at=at)
    led.assign_role("admin", "team:ml", tenant="dev", expires_at="2026-02-02T18:00:00Z", at=at)
    led.assign_role("o1", "service_account:ci", expires_at="2026-02-03T00:00:00Z", at=at)
    led.assign_role("viewer", "user:carol", tenant="prod", at=at)
    for i, ((name, *args), actor) in enumerate(drawn):
        if name == "change_role":
            role, add, remove = args
            args = [role, [p for p in add if p not in remove], remove]
        at = f"2026-02-{2 + i // 8:02d}T{i % 8 * 3:02d}:00:00Z"
        try:
            getattr(led, name)(*args, at=at, actor=actor)
        except E.LedgerError:
            pass


@settings(
    max_examples=int(os.environ.get("AUTHORITY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=st.lists(st.tuples(st.one_of(commands(), EXTRA), ACTORS), min_size=20, max_size=70))
def test_audit_authority_lists_exactly_the_changes_the_default_rules_forbid(url_factory, tmp_path_factory, drawn):
    with AccessLedger.open(url_factory(), create=True) as led:
        _history(led, drawn)
        oracle, expected = Oracle(), []
        for position, ev in led.read():
            verdict = oracle.judge(ev)
            if verdict is not None:
                expected.append((position, *verdict))
            oracle.apply(ev)
        rows = authority(led, tmp_path_factory.mktemp("wh"))
        assert [(r["position"], r["finding"], r["permission"]) for r in rows] == expected
        exported = list(led.export_lines())
    # The same history offered to a ledger that enforces authority: it records exactly what the rules allow.
    with AccessLedger.open(url_factory(), create=True) as enforcing:
        enforcing.init(at="2026-02-01T00:00:00Z", enforce_authority=True)
        oracle = Oracle()
        oracle.apply(json.loads(exported[0]))
        for line in exported[1:]:
            ev = json.loads(line)
            verdict = oracle.judge(ev)
            try:
                enforcing.append(ev)
            except E.Unauthorised as exc:
                assert verdict is not None and verdict[1] in str(exc) or verdict[0] == "change-by-inactive-actor", exc
                continue
            except E.LedgerError:
                assert verdict is None  # refused for another reason (an earlier change was not recorded)
                continue
            assert verdict is None, ev
            oracle.apply(ev)
        assert authority(enforcing, tmp_path_factory.mktemp("wh")) == []


def test_verify_replays_an_enforcing_ledger_and_catches_the_flag_edited_away(enforced):
    with AccessLedger.open(enforced) as led:
        assert led.verify().ok
        with led.store.transaction(write=True) as c:
            c.execute(
                "UPDATE al_entities SET data = ? WHERE kind = 'organization'",
                (json.dumps({"name": "acme", "preset": "zenml-pro"}),),
            )
        result = led.verify()
        assert not result.ok and "al_entities" in result.problem
