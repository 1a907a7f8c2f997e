"""Every refusal of DESIGN section 3 through the Python API: the exact message, nothing written."""

from __future__ import annotations

import pytest

from ledger import errors as E
from ledger.app import AccessLedger

T0 = "2026-01-01T00:00:00Z"


def at(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


@pytest.fixture
def org(led: AccessLedger) -> AccessLedger:
    """An organization with a tenant, users, a service account, a team and a custom role."""
    led.create_tenant("prod", at=at(2))
    led.create_tenant("staging", at=at(2))
    led.create_user("alice", at=at(2))
    led.create_user("bob", at=at(2))
    led.create_service_account("ci-bot", at=at(2))
    led.create_team("research", at=at(2))
    led.add_team_member("research", "user:alice", at=at(2))
    led.create_role("data_scientist", "tenant", ["model:promote"], base="editor", at=at(3))
    led.assign_role("data_scientist", "user:alice", tenant="prod", at=at(3))
    return led


def refused(led: AccessLedger, call, error: type[E.LedgerError], message: str) -> None:
    """The call raises `error` with exactly `message` and the ledger is unchanged."""
    before_head, before_link = led.store.head()[0], led.store.head()[2]
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
    assert led.store.head()[0] == before_head
    assert led.store.head()[2] == before_link
    assert led.count() == before_head
    assert led.verify().ok


def test_assign_refuses_unknown_role(org):
    refused(
        org,
        lambda: org.assign_role("ghost", "user:bob", tenant="prod", at=at(4)),
        E.UnknownEntity,
        "unknown role 'ghost'",
    )


def test_assign_refuses_unknown_tenant(org):
    refused(
        org,
        lambda: org.assign_role("viewer", "user:bob", tenant="qa", at=at(4)),
        E.UnknownEntity,
        "unknown tenant 'qa'",
    )


def test_assign_refuses_unknown_principal(org):
    refused(
        org,
        lambda: org.assign_role("viewer", "user:carol", tenant="prod", at=at(4)),
        E.UnknownEntity,
        "unknown user 'carol'",
    )


def test_assign_refuses_assigning_twice(org):
    refused(
        org,
        lambda: org.assign_role("data_scientist", "user:alice", tenant="prod", at=at(4)),
        E.AlreadyAssigned,
        "user:alice already holds role 'data_scientist' in tenant 'prod' (unassign it first, even if it has expired)",
    )


def test_assign_refuses_again_while_an_expired_assignment_is_still_held(org):
    org.assign_role("viewer", "user:bob", tenant="prod", expires_at=at(5), at=at(4))
    refused(
        org,
        lambda: org.assign_role("viewer", "user:bob", tenant="prod", at=at(6)),
        E.AlreadyAssigned,
        "user:bob already holds role 'viewer' in tenant 'prod' (unassign it first, even if it has expired)",
    )
    org.unassign_role("viewer", "user:bob", tenant="prod", at=at(6))
    org.assign_role("viewer", "user:bob", tenant="prod", at=at(6))


def test_assign_refuses_tenant_role_without_tenant(org):
    refused(
        org,
        lambda: org.assign_role("viewer", "user:bob", at=at(4)),
        E.ScopeMismatch,
        "role 'viewer' is a tenant role: give --tenant",
    )


def test_assign_refuses_organization_role_with_tenant(org):
    refused(
        org,
        lambda: org.assign_role("org_viewer", "user:bob", tenant="prod", at=at(4)),
        E.ScopeMismatch,
        "role 'org_viewer' is an organization role: give no tenant or resource",
    )


def test_assign_refuses_expiry_not_after_the_assignment(org):
    refused(
        org,
        lambda: org.assign_role("viewer", "user:bob", tenant="prod", expires_at=at(4), at=at(4)),
        E.ValidationError,
        "expires_at: 2026-01-04T00:00:00Z is not after the assignment time 2026-01-04T00:00:00Z",
    )


def test_assign_refuses_organization_type_as_resource(org):
    refused(
        org,
        lambda: org.assign_role("viewer", "user:bob", tenant="prod", resource="billing/x", at=at(4)),
        E.ValidationError,
        "resource: 'billing' is not a tenant resource type",
    )


def test_unassign_refuses_what_is_not_held(org):
    refused(
        org,
        lambda: org.unassign_role("viewer", "user:bob", tenant="prod", at=at(4)),
        E.NotAssigned,
        "user:bob does not hold role 'viewer' in tenant 'prod'",
    )


def test_unassign_refuses_a_different_resource_than_held(org):
    org.assign_role("viewer", "user:bob", tenant="prod", resource="model/fraud", at=at(4))
    refused(
        org,
        lambda: org.unassign_role("viewer", "user:bob", tenant="prod", at=at(4)),
        E.NotAssigned,
        "user:bob does not hold role 'viewer' in tenant 'prod'",
    )


def test_unassign_from_a_deactivated_principal_is_allowed(org):
    org.deactivate_user("alice", at=at(4))
    org.unassign_role("data_scientist", "user:alice", tenant="prod", at=at(4))
    assert org.grants("data_scientist") == []


def test_removing_a_deactivated_member_from_a_team_is_allowed(org):
    org.deactivate_user("alice", at=at(4))
    org.remove_team_member("research", "user:alice", at=at(4))


def test_delete_role_refuses_an_assigned_role(org):
    refused(
        org,
        lambda: org.delete_role("data_scientist", at=at(4)),
        E.RoleInUse,
        "role 'data_scientist' is assigned (to user:alice in tenant 'prod'): unassign it first",
    )


def test_delete_role_refuses_a_base_role(org):
    org.create_role("lead", "tenant", ["model_version:promote"], base="data_scientist", at=at(4))
    org.unassign_role("data_scientist", "user:alice", tenant="prod", at=at(4))
    refused(
        org,
        lambda: org.delete_role("data_scientist", at=at(5)),
        E.RoleInUse,
        "role 'data_scientist' is the base of role 'lead'",
    )
    org.delete_role("lead", at=at(5))
    org.delete_role("data_scientist", at=at(5))


@pytest.mark.parametrize(
    "change",
    [
        lambda led: led.change_role("admin", add=["model:read"], at=at(4)),
        lambda led: led.delete_role("viewer", at=at(4)),
    ],
)
def test_predefined_roles_cannot_be_changed_or_deleted(org, change):
    head = org.head()
    with pytest.raises(E.PredefinedRole):
        change(org)
    assert org.head() == head
    assert org.verify().ok


def test_change_predefined_role_message(org):
    refused(
        org,
        lambda: org.change_role("editor", add=["model:update"], at=at(4)),
        E.PredefinedRole,
        "role 'editor' is predefined and cannot be changed",
    )


def test_role_base_must_have_the_same_scope(org):
    refused(
        org,
        lambda: org.create_role("x", "organization", ["tenant:read"], base="viewer", at=at(4)),
        E.ScopeMismatch,
        "base role 'viewer' has tenant scope, not organization",
    )


def test_role_permissions_must_belong_to_the_preset_and_scope(org):
    refused(
        org,
        lambda: org.create_role("x", "tenant", ["billing:read"], at=at(4)),
        E.ValidationError,
        "permissions: 'billing' is not a tenant resource type of the zenml-pro preset",
    )
    refused(
        org,
        lambda: org.create_role("x", "tenant", ["model:fly"], at=at(4)),
        E.ValidationError,
        "permissions: 'fly' is not an action of the zenml-pro preset",
    )


def test_change_role_refuses_removing_a_permission_it_does_not_have(org):
    refused(
        org,
        lambda: org.change_role("data_scientist", remove=["model:delete"], at=at(4)),
        E.ValidationError,
        "remove: role 'data_scientist' does not have permission 'model:delete'",
    )


def test_refuses_an_event_dated_before_the_newest(org):
    refused(
        org,
        lambda: org.create_user("carol", at=at(2)),
        E.OutOfOrder,
        "at: 2026-01-02T00:00:00Z is before the ledger's newest event (2026-01-03T00:00:00Z); the ledger is "
        "append-only in time",
    )


def test_accepts_an_event_dated_exactly_at_the_newest(org):
    org.create_user("carol", at=at(3))


def test_refuses_an_event_more_than_five_minutes_in_the_future(org):
    with pytest.raises(E.OutOfOrder, match="more than five minutes in the future"):
        org.create_user("carol", at="2999-01-01T00:00:00Z")
    assert org.verify().ok


def test_deleted_tenant_refuses_events_that_target_it(org):
    org.delete_tenant("staging", at=at(4))
    refused(
        org,
        lambda: org.assign_role("viewer", "user:bob", tenant="staging", at=at(4)),
        E.DeletedTenant,
        "tenant 'staging' was deleted: nothing may target it",
    )
    refused(
        org,
        lambda: org.register_connector("aws", "staging", at=at(4)),
        E.DeletedTenant,
        "tenant 'staging' was deleted: nothing may target it",
    )
    refused(
        org,
        lambda: org.create_tenant("staging", at=at(4)),
        E.DuplicateEntity,
        "tenant 'staging' was deleted; its name is not reused",
    )


def test_usage_events_are_accepted_for_deactivated_principals_and_denied_outcomes(org):
    org.register_connector("aws-prod", "prod", "aws", at=at(4))
    org.deactivate_user("bob", at=at(4))
    org.record_connector_access("aws-prod", "prod", "user:bob", "denied", at=at(5))
    org.record_access("user:bob", "read", "model/fraud", "allowed", tenant="prod", at=at(5))


def test_usage_events_refuse_unknown_principals_and_connectors(org):
    org.register_connector("aws-prod", "prod", at=at(4))
    refused(
        org,
        lambda: org.record_connector_access("aws-prod", "prod", "user:eve", "allowed", at=at(4)),
        E.UnknownEntity,
        "unknown user 'eve'",
    )
    refused(
        org,
        lambda: org.record_connector_access("gcp", "prod", "user:bob", "allowed", at=at(4)),
        E.UnknownEntity,
        "unknown service connector 'gcp' in tenant 'prod'",
    )


def test_team_rules(org):
    refused(
        org,
        lambda: org.add_team_member("research", "user:alice", at=at(4)),
        E.MembershipError,
        "user:alice is already a member of team 'research'",
    )
    refused(
        org,
        lambda: org.remove_team_member("research", "user:bob", at=at(4)),
        E.MembershipError,
        "user:bob is not a member of team 'research'",
    )
    refused(
        org,
        lambda: org.add_team_member("research", "team:research", at=at(4)),
        E.ValidationError,
        "member: teams cannot be members of teams",
    )


def test_deactivation_twice_is_refused(org):
    org.deactivate_user("bob", at=at(4))
    refused(org, lambda: org.deactivate_user("bob", at=at(4)), E.InactivePrincipal, "user 'bob' is already deactivated")
    org.reactivate_user("bob", at=at(5))


def test_duplicate_names_are_refused(org):
    refused(org, lambda: org.create_user("alice", at=at(4)), E.DuplicateEntity, "user 'alice' already exists")
    refused(
        org,
        lambda: org.create_role("editor", "tenant", [], at=at(4)),
        E.DuplicateEntity,
        "role 'editor' already exists",
    )


def test_events_before_init_are_refused(ledger_url):
    led = AccessLedger.open(ledger_url, create=True)
    try:
        with pytest.raises(E.NotInitialized):
            led.create_user("alice", at=T0)
        assert led.head() == 0
        led.init(at=T0)
        with pytest.raises(E.AlreadyInitialized):
            led.init(at=T0)
    finally:
        led.close()


def test_unknown_fields_are_refused_and_named(org):
    with pytest.raises(E.ValidationError) as info:
        org.append(
            {
                "type": "ConnectorRegistered",
                "at": at(4),
                "actor": "system",
                "connector": "aws",
                "tenant": "prod",
                "aws_secret_access_key": "AKIA...",
            }
        )
    assert str(info.value) == (
        "aws_secret_access_key: unknown field (the ledger stores only the documented fields, never secret values)"
    )


def test_idempotency_id_makes_a_repeat_a_no_op_and_a_different_event_a_conflict(org):
    first = org.create_user("carol", at=at(4), id="hr-42")
    assert org.create_user("carol", at=at(4), id="hr-42") == first
    assert org.head() == first
    with pytest.raises(E.IdConflict, match="already used by a different event"):
        org.create_user("dave", at=at(4), id="hr-42")


def test_zenml_oss_preset_has_admin_and_guest(ledger_url):
    led = AccessLedger.open(ledger_url, create=True)
    try:
        led.init(preset="zenml-oss", at=T0)
        roles = {r["name"]: r for r in led.entities("role")}
        assert set(roles) == {"admin", "guest"}
        assert roles["guest"]["permissions"] == ["*:read", "*:me"]
        led.create_user("alice", at=T0)
        led.assign_role("guest", "user:alice", at=T0)
        with pytest.raises(E.ValidationError, match="'promote' is not an action of the zenml-oss preset"):
            led.create_role("x", "organization", ["*:promote"], at=T0)
    finally:
        led.close()
