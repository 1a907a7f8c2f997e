"""Authority of a change (DESIGN section 3): `audit authority`, `init --enforce-authority`, the rules files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ledger import errors as E
from ledger.app import AccessLedger
from ledger.cli import app
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
    led.assign_role("viewer", "user:vera", tenant="prod", at=d(2))                        # 6
    led.assign_role("admin", "user:bob", tenant="prod", at=d(3), actor="user:vera")        # 7
    rows = authority(led, tmp_path)
    assert brief(rows) == [("unauthorised-change", "user:vera", 7, "RoleAssigned", "member:update")]
    row = rows[0]
    assert row["where"] == "tenant:prod"
    assert row["what"] == "RoleAssigned admin to user:bob in tenant prod"
    assert row["needed"] == "member:update in the organization or in tenant prod"
    assert row["since"] == d(3) and row["positions"] == [7]


def test_a_leaver_granting_admin_is_a_change_by_an_inactive_actor(led, tmp_path):
    staff(led)
    led.assign_role("org_admin", "user:lee", at=d(2))                                       # 6
    led.assign_role("viewer", "user:bob", tenant="prod", at=d(3), actor="user:lee")         # 7: allowed
    led.deactivate_user("lee", at=d(4), reason="HR-1 leaver")                               # 8
    led.assign_role("admin", "user:bob", tenant="prod", at=d(5), actor="user:lee")          # 9
    led.create_user("mallory", at=d(6), actor="user:ghost")                                 # 10
    rows = authority(led, tmp_path)
    assert brief(rows) == [("change-by-inactive-actor", "user:lee", 9, "RoleAssigned", "member:update"),
                           ("change-by-inactive-actor", "user:ghost", 10, "UserCreated", "member:create")]
    assert rows[0]["detail"] == f"user:lee was deactivated at {d(4)} (position 8)"
    assert rows[1]["detail"] == "user:ghost is not recorded in the ledger at that instant"


def test_system_is_exempt_and_held_permissions_authorise(led, tmp_path):
    staff(led)
    led.register_connector("aws", "prod", at=d(1), actor="system")                          # 6
    led.assign_role("admin", "user:vera", tenant="prod", at=d(2))                           # 7
    led.assign_role("org_editor", "user:bob", at=d(2))                                      # 8
    # vera's tenant admin (*:*) matches member:update in prod and service_connector:delete there ...
    led.assign_role("viewer", "user:lee", tenant="prod", at=d(3), actor="user:vera")        # 9
    led.delete_connector("aws", "prod", at=d(3), actor="user:vera")                         # 10
    # ... and bob's org_editor creates tenants and users, but cannot delete a tenant.
    led.create_tenant("dev", at=d(4), actor="user:bob")                                     # 11
    led.create_user("zoe", at=d(4), actor="user:bob")                                       # 12
    led.delete_tenant("dev", at=d(5), actor="user:bob")                                     # 13
    # vera's admin in prod does not reach the organization: no org role assignment.
    led.assign_role("org_viewer", "user:lee", at=d(5), actor="user:vera")                   # 14
    rows = authority(led, tmp_path)
    assert brief(rows) == [("unauthorised-change", "user:bob", 13, "TenantDeleted", "tenant:delete"),
                           ("unauthorised-change", "user:vera", 14, "RoleAssigned", "member:update")]
    assert rows[1]["needed"] == "member:update in the organization"


def test_the_period_bounds_the_changes_judged(led, tmp_path):
    staff(led)
    led.create_user("x", at=d(3), actor="user:vera")                                        # 6
    led.create_user("y", at=d(5), actor="user:vera")                                        # 7
    assert [r["position"] for r in authority(led, tmp_path, start=d(4))] == [7]
    assert [r["position"] for r in authority(led, tmp_path, end=d(4))] == [6]


def test_audit_authority_command_lists_the_unauthorised_change(led, tmp_path):
    staff(led)
    led.assign_role("viewer", "user:vera", tenant="prod", at=d(2))
    led.assign_role("admin", "user:bob", tenant="prod", at=d(3), actor="user:vera")
    result = runner.invoke(app, ["--db", led.store.url, "audit", "authority", "--period", "2026-01",
                                 "--warehouse", str(tmp_path / "w.duckdb"), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert brief(json.loads(result.stdout)) == [("unauthorised-change", "user:vera", 7, "RoleAssigned",
                                                 "member:update")]


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
    (["role", "create", "r1", "--scope", "tenant", "-p", "model:read"], "role:create in the organization",
     "RoleCreated"),
    (["role", "assign", "admin", "--to", "user:bob", "--tenant", "prod"],
     "member:update in the organization or in tenant 'prod'", "RoleAssigned"),
    (["role", "assign", "org_admin", "--to", "user:vera"], "member:update in the organization", "RoleAssigned"),
    (["role", "unassign", "viewer", "--from", "user:vera", "--tenant", "prod"],
     "member:update in the organization or in tenant 'prod'", "RoleUnassigned"),
    (["connector", "register", "aws", "--tenant", "prod"], "service_connector:create in tenant 'prod'",
     "ConnectorRegistered"),
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
    assert result.stderr.strip() == ("Error: actor: user:lee is deactivated and may make no change "
                                     "(this ledger enforces authority)")
    assert snapshot(enforced) == before
    result = cli(enforced, "role", "assign", "editor", "--to", "user:bob", "--tenant", "prod",
                 "--actor", "service_account:ops")
    assert result.exit_code == 0, result.output
    result = cli(enforced, "connector", "register", "aws", "--tenant", "prod", "--actor", "service_account:ops")
    assert result.exit_code == 0, result.output


def test_enforced_import_refuses_the_whole_file_at_an_unauthorised_line(enforced, tmp_path):
    before = snapshot(enforced)
    at = format_instant(now())
    lines = [{"type": "UserCreated", "at": at, "actor": "system", "user": "amy"},
             {"type": "RoleAssigned", "at": at, "actor": "service_account:ops", "role": "viewer",
              "principal": "user:amy", "tenant": "prod"},
             {"type": "RoleAssigned", "at": at, "actor": "user:vera", "role": "admin",
              "principal": "user:amy", "tenant": "prod"}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = cli(enforced, "import", str(path))
    assert result.exit_code != 0
    assert result.stderr.strip() == ("Error: line 3: " + LACKS.format(
        "member:update in the organization or in tenant 'prod'", "RoleAssigned"))
    assert snapshot(enforced) == before
    # Within one import, what the earlier lines granted counts: amy, given admin by ops, may assign.
    lines[2]["actor"] = "service_account:ops"
    lines.append({"type": "RoleAssigned", "at": at, "actor": "user:amy", "role": "editor",
                  "principal": "user:bob", "tenant": "prod"})
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
    lines = [{"type": "OrganizationCreated", "at": d(1), "actor": "system", "name": "acme", "preset": "zenml-pro",
              "enforce_authority": True},
             {"type": "TenantCreated", "at": d(1), "actor": "user:ghost", "tenant": "prod"}]
    with AccessLedger.open(url, create=True) as led:
        with pytest.raises(E.Unauthorised) as refused:
            led.import_lines([json.dumps(x) for x in lines])
        assert str(refused.value) == ("line 2: actor: user:ghost is not recorded in the ledger and may make no "
                                      "change (this ledger enforces authority)")
        assert led.head() == 0
