"""The semantics of DESIGN section 3, the point-in-time machinery, and casbin agreement."""

from __future__ import annotations

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import COMMANDS, NAMES, TENANTS, apply_commands

from ledger import errors as E
from ledger.app import AccessLedger
from projections.answers import Question, check, diff, what_can, who_can
from projections.casbin_export import policy_lines, request, write
from projections.permissions import PermissionState
from projections.pit import Timeline


def d(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


@pytest.fixture
def org(led: AccessLedger) -> AccessLedger:
    led.create_tenant("prod", at=d(2))
    led.create_tenant("dev", at=d(2))
    for user in ("alice", "bob", "carol"):
        led.create_user(user, at=d(2))
    led.create_service_account("ci", at=d(2))
    led.create_team("research", at=d(2))
    led.create_role("ds", "tenant", ["model:promote"], base="editor", at=d(3))
    led.create_role("lead", "tenant", ["model_version:promote"], base="ds", at=d(3))
    return led


def allowed(led: AccessLedger, principal: str, action: str, resource: str, tenant: str | None, at: str) -> bool:
    state = Timeline(led).at_time(at)
    return check(state, Question(principal, action, resource, tenant), at)["allowed"]


def test_direct_tenant_assignment_allows_only_in_that_tenant(org):
    org.assign_role("viewer", "user:alice", tenant="prod", at=d(4))
    assert allowed(org, "user:alice", "read", "model/m", "prod", d(5))
    assert not allowed(org, "user:alice", "read", "model/m", "dev", d(5))
    assert not allowed(org, "user:alice", "update", "model/m", "prod", d(5))


def test_assignment_is_in_force_exactly_at_its_instant_and_not_before(org):
    org.assign_role("viewer", "user:alice", tenant="prod", at=d(4, 12))
    assert not allowed(org, "user:alice", "read", "model/m", "prod", "2026-01-04T11:59:59Z")
    assert allowed(org, "user:alice", "read", "model/m", "prod", d(4, 12))


def test_revocation_takes_effect_exactly_at_its_instant(org):
    org.assign_role("viewer", "user:alice", tenant="prod", at=d(4))
    org.unassign_role("viewer", "user:alice", tenant="prod", at=d(6, 9))
    assert allowed(org, "user:alice", "read", "model/m", "prod", "2026-01-06T08:59:59Z")
    assert not allowed(org, "user:alice", "read", "model/m", "prod", d(6, 9))


def test_assignment_grants_nothing_at_its_expiry_instant(org):
    org.assign_role("viewer", "user:alice", tenant="prod", expires_at=d(8), at=d(4))
    assert allowed(org, "user:alice", "read", "model/m", "prod", "2026-01-07T23:59:59Z")
    assert not allowed(org, "user:alice", "read", "model/m", "prod", d(8))
    # no event is needed for the expiry, and the expired assignment still exists until unassigned
    assert org.grants("viewer")[0]["expires_at"] == d(8)


def test_base_roles_are_inherited_live(org):
    org.assign_role("lead", "user:alice", tenant="prod", at=d(4))
    assert allowed(org, "user:alice", "promote", "model_version/v1", "prod", d(4))
    assert allowed(org, "user:alice", "promote", "model/m", "prod", d(4))  # from ds
    assert allowed(org, "user:alice", "create", "pipeline/p", "prod", d(4))  # from editor
    assert not allowed(org, "user:alice", "promote", "pipeline/p", "prod", d(4))
    org.change_role("ds", add=["pipeline:delete"], at=d(5))
    assert allowed(org, "user:alice", "delete", "pipeline/p", "prod", d(5))  # a change to the base shows
    assert not allowed(org, "user:alice", "delete", "pipeline/p", "prod", d(4))


def test_team_membership_gives_team_assignments_while_a_member(org):
    org.assign_role("ds", "team:research", tenant="prod", at=d(4))
    org.add_team_member("research", "user:bob", at=d(5))
    org.remove_team_member("research", "user:bob", at=d(7))
    assert not allowed(org, "user:bob", "promote", "model/m", "prod", d(4))
    assert allowed(org, "user:bob", "promote", "model/m", "prod", d(5))
    assert not allowed(org, "user:bob", "promote", "model/m", "prod", d(7))


def test_deleted_team_grants_nothing(org):
    org.assign_role("ds", "team:research", tenant="prod", at=d(4))
    org.add_team_member("research", "user:bob", at=d(4))
    org.delete_team("research", at=d(6))
    assert allowed(org, "user:bob", "promote", "model/m", "prod", d(5))
    assert not allowed(org, "user:bob", "promote", "model/m", "prod", d(6))


def test_deactivated_principal_has_nothing_until_reactivated(org):
    org.assign_role("admin", "user:carol", tenant="prod", at=d(4))
    org.deactivate_user("carol", at=d(5))
    org.reactivate_user("carol", at=d(7))
    assert allowed(org, "user:carol", "delete", "stack/s", "prod", d(4))
    assert not allowed(org, "user:carol", "delete", "stack/s", "prod", d(5))
    assert allowed(org, "user:carol", "delete", "stack/s", "prod", d(7))


def test_deleted_tenant_grants_nothing_from_its_deletion(org):
    org.assign_role("admin", "service_account:ci", tenant="dev", at=d(4))
    org.delete_tenant("dev", at=d(6))
    assert allowed(org, "service_account:ci", "update", "stack/s", "dev", "2026-01-05T23:00:00Z")
    assert not allowed(org, "service_account:ci", "update", "stack/s", "dev", d(6))


def test_resource_scoped_assignment_applies_only_to_that_resource(org):
    org.assign_role("admin", "user:alice", tenant="prod", resource="model/fraud", at=d(4))
    assert allowed(org, "user:alice", "delete", "model/fraud", "prod", d(4))
    assert not allowed(org, "user:alice", "delete", "model/other", "prod", d(4))
    assert not allowed(org, "user:alice", "delete", "pipeline/fraud", "prod", d(4))


def test_resource_scope_keeps_only_permissions_of_that_type_or_wildcard(org):
    org.create_role("mixed", "tenant", ["pipeline:read", "model:update"], at=d(4))
    org.assign_role("mixed", "user:bob", tenant="prod", resource="model/fraud", at=d(4))
    assert allowed(org, "user:bob", "update", "model/fraud", "prod", d(4))
    assert not allowed(org, "user:bob", "read", "model/fraud", "prod", d(4))  # pipeline:read does not apply


def test_organization_roles_do_not_imply_tenant_roles(org):
    org.assign_role("org_admin", "user:alice", at=d(4))
    assert allowed(org, "user:alice", "update", "tenant/prod", None, d(4))
    assert not allowed(org, "user:alice", "read", "model/m", "prod", d(4))
    assert not allowed(org, "user:alice", "read", "billing/b", None, "2026-01-03T00:00:00Z")


def test_org_editor_has_no_billing(org):
    org.assign_role("org_editor", "user:bob", at=d(4))
    assert allowed(org, "user:bob", "create", "team/t", None, d(4))
    assert not allowed(org, "user:bob", "read", "billing/b", None, d(4))


def test_wildcards_in_permissions(org):
    org.create_role("secrets", "tenant", ["secret:*", "*:read_secret_value"], at=d(4))
    org.assign_role("secrets", "user:bob", tenant="prod", at=d(4))
    assert allowed(org, "user:bob", "delete", "secret/s", "prod", d(4))
    assert allowed(org, "user:bob", "read_secret_value", "service_connector/aws", "prod", d(4))
    assert not allowed(org, "user:bob", "delete", "service_connector/aws", "prod", d(4))


def test_unknown_principal_is_denied_not_an_error(org):
    assert not allowed(org, "user:nobody", "read", "model/m", "prod", d(4))


def test_question_with_a_tenant_type_and_no_tenant_is_refused(org):
    state = Timeline(org).current()
    with pytest.raises(E.ValidationError, match="tenant: required for the tenant resource type 'model'"):
        check(state, Question("user:alice", "read", "model/m", None), d(4))


def test_who_can_expands_teams_and_what_can_lists_paths(org):
    org.assign_role("ds", "team:research", tenant="prod", at=d(4))
    org.add_team_member("research", "user:bob", at=d(4))
    org.add_team_member("research", "service_account:ci", at=d(4))
    org.assign_role("viewer", "user:carol", tenant="prod", at=d(4))
    state = Timeline(org).current()
    who = who_can(state, "promote", "model/m", "prod", d(5))
    assert [(r["principal"], r["role"], r["via_team"]) for r in who] == [
        ("service_account:ci", "ds", "research"),
        ("user:bob", "ds", "research"),
    ]
    rows = what_can(state, "user:carol", "prod", d(5))
    assert [(r["permission"], r["role"]) for r in rows] == [("*:read", "viewer")]


def test_explain_links_carry_their_events(org):
    org.assign_role("lead", "team:research", tenant="prod", at=d(4), reason="SEC-9")
    org.add_team_member("research", "user:bob", at=d(4), reason="HR-1")
    answer = check(Timeline(org).current(), Question("user:bob", "create", "pipeline/p", "prod"), d(5))
    assert answer["allowed"]
    links = answer["paths"][0]["links"]
    assert [link["link"] for link in links] == [
        "user:bob is a member of team:research",
        "team:research holds role lead in tenant prod",
        "role lead is built on role ds",
        "role ds is built on role editor",
        "role editor allows *:create",
    ]
    assert links[0]["reason"] == "HR-1" and links[1]["reason"] == "SEC-9"
    assert links[-1]["event"] == "Preset"


def test_diff_names_gains_losses_and_their_causes(org):
    org.assign_role("viewer", "user:alice", tenant="prod", expires_at=d(9), at=d(4), reason="R1")
    org.assign_role("editor", "user:bob", tenant="prod", at=d(5), reason="R2")
    tl = Timeline(org)
    before, after = tl.at_time(d(4, 12)), tl.at_time(d(10))
    events = list(org.read_changes(org.position_at(d(4, 12)) + 1, org.position_at(d(10))))
    rows = diff(before, after, d(4, 12), d(10), events)
    lost = [r for r in rows if r["change"] == "lost"]
    gained = [r for r in rows if r["change"] == "gained"]
    assert [(r["principal"], r["permission"]) for r in lost] == [("user:alice", "*:read")]
    assert lost[0]["causes"][0]["event"] == "Expired"
    assert {(r["principal"], r["permission"]) for r in gained} == {
        ("user:bob", "*:create"),
        ("user:bob", "*:read"),
        ("user:bob", "*:share"),
    }
    assert all(r["causes"][0]["event"] == "RoleAssigned" and r["causes"][0]["reason"] == "R2" for r in gained)


def test_zenml_oss_preset_checks(ledger_url):
    led = AccessLedger.open(ledger_url, create=True)
    try:
        led.init(preset="zenml-oss", at=d(1))
        led.create_user("alice", at=d(1))
        led.assign_role("guest", "user:alice", at=d(2))
        assert allowed(led, "user:alice", "read", "pipeline/p", None, d(2))
        assert not allowed(led, "user:alice", "write", "pipeline/p", None, d(2))
    finally:
        led.close()


# -- the point-in-time machinery against plain replay ----------------------------------------


def build(led: AccessLedger, commands) -> None:
    led.init(at="2026-02-01T00:00:00Z")
    apply_commands(led, commands, lambda i: f"2026-02-{2 + i // 3:02d}T{i % 3 * 8:02d}:00:00Z")


def replay(led: AccessLedger, stop: int) -> PermissionState:
    return PermissionState().fold(led.read(1, stop)) if stop else PermissionState()


SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(commands=st.lists(COMMANDS, min_size=1, max_size=45), cut=st.floats(0, 1))
def test_incremental_catch_up_equals_full_replay(tmp_path_factory, commands, cut):
    led = AccessLedger.open(str(tmp_path_factory.mktemp("pit") / "l.db"), create=True)
    build(led, commands[: int(len(commands) * cut)])
    Timeline(led).current()  # persists the current projection at this head
    build_more = commands[int(len(commands) * cut) :]
    apply_commands(led, build_more, lambda i: f"2026-03-{1 + i // 3:02d}T{i % 3 * 8:02d}:00:00Z")
    caught_up = Timeline(led).current()
    assert caught_up == replay(led, led.head())
    led.close()


@SETTINGS
@given(commands=st.lists(COMMANDS, min_size=1, max_size=45), data=st.data())
def test_state_at_position_n_equals_replay_of_the_first_n_events(tmp_path_factory, commands, data, monkeypatch):
    import projections.pit as pit

    monkeypatch.setattr(pit, "CHECKPOINT_EVERY", 4)  # many checkpoints on a small log
    led = AccessLedger.open(str(tmp_path_factory.mktemp("pit") / "l.db"), create=True)
    build(led, commands)
    head = led.head()
    timeline = Timeline(led)
    positions = data.draw(st.lists(st.integers(0, head), min_size=1, max_size=6))
    for n in positions:
        assert timeline.at_position(n) == replay(led, n), n
    # a fresh timeline, starting from the persisted checkpoints, agrees too
    for n in positions:
        assert Timeline(led).at_position(n) == replay(led, n), n
    # and so does one forward sweep over all of them
    # (answers must be computed from the state at once: the sweep folds the same state onwards)
    swept = Timeline(led).sweep(positions, lambda n: n, lambda state, n: state == replay(led, n))
    assert all(swept), list(zip(positions, swept))
    led.close()


@SETTINGS
@given(
    commands=st.lists(COMMANDS, min_size=1, max_size=45),
    questions=st.lists(
        st.tuples(
            st.one_of(NAMES.map("user:{}".format), st.just("service_account:ci")),
            st.sampled_from(["read", "update", "promote", "delete", "create"]),
            st.sampled_from(["model/m1", "model/m2", "pipeline/p1", "secret/s"]),
            TENANTS,
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_check_agrees_with_pycasbin_loaded_from_the_export(tmp_path_factory, commands, questions):
    folder = tmp_path_factory.mktemp("casbin")
    led = AccessLedger.open(str(folder / "l.db"), create=True)
    build(led, commands)
    instant = "2026-02-28T00:00:00Z"
    state = Timeline(led).at_time(instant)
    model, policy = write(state, instant, folder / "out")
    enforcer = casbin.Enforcer(str(model), str(policy))
    p_rows, g_rows = policy_lines(state, instant)
    assert (len(enforcer.get_policy()), len(enforcer.get_grouping_policy())) == (len(p_rows), len(g_rows))
    for principal, action, resource, tenant in questions:
        ours = check(state, Question(principal, action, resource, tenant), instant)["allowed"]
        assert enforcer.enforce(*request(principal, action, resource, tenant)) == ours, (
            principal,
            action,
            resource,
            tenant,
        )
    led.close()


@SETTINGS
@given(commands=st.lists(COMMANDS, min_size=1, max_size=45), data=st.data())
def test_a_principals_subset_answers_like_the_full_state(tmp_path_factory, commands, data, monkeypatch):
    import projections.pit as pit

    monkeypatch.setattr(pit, "CHECKPOINT_EVERY", 5)
    led = AccessLedger.open(str(tmp_path_factory.mktemp("sub") / "l.db"), create=True)
    build(led, commands)
    Timeline(led).at_position(led.head())  # write the checkpoints
    timeline = Timeline(led)
    for _ in range(5):
        n = data.draw(st.integers(0, led.head()))
        principal = data.draw(st.one_of(NAMES.map("user:{}".format), st.just("service_account:ci")))
        full, sub = replay(led, n), timeline.for_principal(principal, n)
        instant = data.draw(st.sampled_from(["2026-02-04T00:00:00Z", "2026-02-10T00:00:00Z", "2026-03-01T00:00:00Z"]))
        for tenant in ("prod", "dev", None):
            assert list(sub.grants(principal, instant, tenant)) == list(full.grants(principal, instant, tenant))
    led.close()
