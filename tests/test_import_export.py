"""JSONL import and export: atomic, line-numbered errors, idempotent by id, round trip."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import errors as E
from ledger.app import AccessLedger

HISTORY = [
    {"type": "OrganizationCreated", "at": "2026-01-01T00:00:00Z", "actor": "system", "name": "acme",
     "preset": "zenml-pro"},
    {"type": "TenantCreated", "at": "2026-01-01T00:00:00Z", "actor": "user:root", "tenant": "prod",
     "display_name": "Production"},
    {"type": "TenantCreated", "at": "2026-01-01T00:00:01Z", "actor": "user:root", "tenant": "old"},
    {"type": "TenantRenamed", "at": "2026-01-01T00:00:02Z", "actor": "user:root", "tenant": "prod",
     "display_name": "Prod"},
    {"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "user": "alice",
     "email": "alice@example.com"},
    {"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "user": "bob"},
    {"type": "ServiceAccountCreated", "at": "2026-01-02T00:00:00Z", "actor": "user:root",
     "service_account": "ci-bot"},
    {"type": "TeamCreated", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "team": "research"},
    {"type": "TeamMemberAdded", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "team": "research",
     "member": "user:alice"},
    {"type": "TeamMemberAdded", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "team": "research",
     "member": "service_account:ci-bot"},
    {"type": "RoleCreated", "at": "2026-01-03T00:00:00Z", "actor": "user:root", "role": "ds", "scope": "tenant",
     "base": "editor", "permissions": ["model:promote"], "description": "Data Scientist", "reason": "SEC-1"},
    {"type": "RolePermissionsChanged", "at": "2026-01-03T00:00:00Z", "actor": "user:root", "role": "ds",
     "add": ["model_version:promote"], "remove": ["model:promote"]},
    {"type": "RoleAssigned", "at": "2026-01-04T00:00:00Z", "actor": "user:root", "role": "ds",
     "principal": "team:research", "tenant": "prod", "reason": "SEC-2", "id": "grant-1"},
    {"type": "RoleAssigned", "at": "2026-01-04T00:00:00Z", "actor": "user:root", "role": "viewer",
     "principal": "user:bob", "tenant": "prod", "resource": "model/fraud", "expires_at": "2026-02-01T00:00:00Z"},
    {"type": "RoleAssigned", "at": "2026-01-04T00:00:00Z", "actor": "user:root", "role": "org_viewer",
     "principal": "user:bob"},
    {"type": "ConnectorRegistered", "at": "2026-01-05T00:00:00Z", "actor": "user:root", "connector": "aws-prod",
     "tenant": "prod", "connector_type": "aws"},
    {"type": "ConnectorSecretAccessed", "at": "2026-01-05T00:00:00Z", "actor": "system", "connector": "aws-prod",
     "tenant": "prod", "principal": "service_account:ci-bot", "outcome": "allowed", "context": "run 17"},
    {"type": "ResourceAccessed", "at": "2026-01-05T00:00:00Z", "actor": "system", "principal": "user:bob",
     "tenant": "prod", "resource": "model/fraud", "action": "read", "outcome": "denied", "id": "acc-1"},
    {"type": "RoleUnassigned", "at": "2026-01-06T00:00:00Z", "actor": "user:root", "role": "org_viewer",
     "principal": "user:bob"},
    {"type": "UserDeactivated", "at": "2026-01-06T00:00:00Z", "actor": "user:root", "user": "bob"},
    {"type": "UserReactivated", "at": "2026-01-07T00:00:00Z", "actor": "user:root", "user": "bob"},
    {"type": "ServiceAccountDeactivated", "at": "2026-01-07T00:00:00Z", "actor": "user:root",
     "service_account": "ci-bot"},
    {"type": "ServiceAccountReactivated", "at": "2026-01-07T00:00:00Z", "actor": "user:root",
     "service_account": "ci-bot"},
    {"type": "TeamMemberRemoved", "at": "2026-01-08T00:00:00Z", "actor": "user:root", "team": "research",
     "member": "user:alice"},
    {"type": "ConnectorDeleted", "at": "2026-01-08T00:00:00Z", "actor": "user:root", "connector": "aws-prod",
     "tenant": "prod"},
    {"type": "RoleCreated", "at": "2026-01-08T00:00:00Z", "actor": "user:root", "role": "tmp", "scope": "tenant",
     "permissions": []},
    {"type": "RoleDeleted", "at": "2026-01-08T00:00:00Z", "actor": "user:root", "role": "tmp"},
    {"type": "TeamCreated", "at": "2026-01-08T00:00:00Z", "actor": "user:root", "team": "gone"},
    {"type": "TeamDeleted", "at": "2026-01-09T00:00:00Z", "actor": "user:root", "team": "gone"},
    {"type": "TenantDeleted", "at": "2026-01-09T00:00:00Z", "actor": "user:root", "tenant": "old"},
]


def jsonl(events) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def test_history_uses_every_event_type():
    from ledger.events import EVENT_TYPES

    assert {e["type"] for e in HISTORY} == set(EVENT_TYPES)


@pytest.mark.parametrize("workers", [0, 1])
def test_import_then_export_gives_the_same_lines(url_factory, workers):
    led = AccessLedger.open(url_factory(), create=True)
    result = led.import_lines(jsonl(HISTORY), workers=workers)
    assert (result.written, result.first, result.last) == (len(HISTORY), 1, len(HISTORY))
    assert [json.loads(line) for line in led.export_lines()] == HISTORY
    assert led.verify().ok
    led.close()


def test_export_then_import_into_an_empty_ledger_reproduces_events_and_state(url_factory):
    a = AccessLedger.open(url_factory("a"), create=True)
    a.import_lines(jsonl(HISTORY))
    b = AccessLedger.open(url_factory("b"), create=True)
    b.import_lines(list(a.export_lines()))
    assert list(b.export_lines()) == list(a.export_lines())
    assert b.grants() == a.grants()
    for kind in ("user", "team", "role", "tenant", "service_account", "connector"):
        assert b.entities(kind) == a.entities(kind)
    a.close()
    b.close()


def test_export_period_is_inclusive_of_both_ends(url_factory):
    led = AccessLedger.open(url_factory(), create=True)
    led.import_lines(jsonl(HISTORY))
    lines = [json.loads(x) for x in led.export_lines("2026-01-04T00:00:00Z", "2026-01-05T00:00:00Z")]
    assert {e["at"] for e in lines} == {"2026-01-04T00:00:00Z", "2026-01-05T00:00:00Z"}
    assert len(lines) == 6
    assert list(led.export_lines("2027-01-01T00:00:00Z")) == []
    led.close()


@pytest.mark.parametrize("bad_line, message", [
    (b"{not json", "line 3: line is not valid JSON"),
    (b"[1, 2]", "line 3: line is not a JSON object"),
    (b'{"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system"}',
     "line 3: user: required field is missing"),
    (b'{"type": "UserCreated", "at": "2026-01-02T00:00:00", "actor": "system", "user": "x"}',
     "line 3: at: '2026-01-02T00:00:00' has no time zone (add Z or +00:00)"),
    (b'{"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system", "user": "x", "password": "p"}',
     "line 3: password: unknown field (the ledger stores only the documented fields, never secret values)"),
    (b'{"type": "Nope", "at": "2026-01-02T00:00:00Z", "actor": "system"}', "line 3: type: 'Nope' is not an event type"),
    (b'{"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system", "user": 7}',
     "line 3: user: Input should be a valid string"),
    (b'{"type": "RoleAssigned", "at": "2026-01-02T00:00:00Z", "actor": "system", "role": "ghost", '
     b'"principal": "user:a", "tenant": "prod"}', "line 3: role: unknown role 'ghost'"),
    (b'{"type": "UserCreated", "at": "2025-12-31T00:00:00Z", "actor": "system", "user": "x"}',
     "line 3: at: 2025-12-31T00:00:00Z is before the ledger's newest event (2026-01-01T00:00:00Z); the ledger is "
     "append-only in time"),
])
@pytest.mark.parametrize("workers", [0, 1])
def test_bad_line_is_reported_with_its_number_and_nothing_is_written(url_factory, bad_line, message, workers):
    led = AccessLedger.open(url_factory(), create=True)
    lines = jsonl(HISTORY[:2]) + [bad_line] + jsonl(HISTORY[2:])
    with pytest.raises(E.LedgerError) as info:
        led.import_lines(lines, workers=workers)
    assert str(info.value) == message
    assert led.head() == 0 and led.count() == 0
    led.close()


def test_reimporting_events_with_ids_is_a_no_op(url_factory):
    led = AccessLedger.open(url_factory(), create=True)
    led.import_lines(jsonl(HISTORY))
    with_ids = [e for e in HISTORY if "id" in e]
    result = led.import_lines(jsonl(with_ids))
    assert (result.written, result.skipped) == (0, len(with_ids))
    assert led.head() == len(HISTORY)
    led.close()


def test_an_id_repeated_within_one_file_is_recorded_once(url_factory):
    led = AccessLedger.open(url_factory(), create=True)
    access = {"type": "ResourceAccessed", "at": "2026-01-09T00:00:00Z", "actor": "system", "principal": "user:bob",
              "tenant": "prod", "resource": "model/fraud", "action": "read", "outcome": "allowed", "id": "dup"}
    # The repeat lands in a later chunk than the first, across a flush.
    filler = [dict(access, id=f"f{i}") for i in range(6000)]
    result = led.import_lines(jsonl(HISTORY + [access] + filler + [access]))
    assert result.skipped == 1
    assert result.written == len(HISTORY) + 1 + len(filler)
    led.close()


# -- the round-trip property over random valid histories -------------------------------------

NAMES = st.sampled_from(["alice", "bob", "carol", "o'brien", "semi;colon", "ünïcode"])
TENANTS = st.sampled_from(["prod", "staging", "dev"])
ROLES = st.sampled_from(["viewer", "editor", "admin", "custom_a", "custom_b"])
PERMS = st.lists(st.sampled_from(["model:read", "model:promote", "pipeline:create", "*:read", "secret:*"]),
                 unique=True, max_size=3)
PRINCIPALS = st.one_of(NAMES.map("user:{}".format), st.sampled_from(["team:ml", "service_account:ci"]))

COMMANDS = st.one_of(
    st.tuples(st.just("create_tenant"), TENANTS),
    st.tuples(st.just("delete_tenant"), TENANTS),
    st.tuples(st.just("create_user"), NAMES),
    st.tuples(st.just("deactivate_user"), NAMES),
    st.tuples(st.just("reactivate_user"), NAMES),
    st.tuples(st.just("create_team"), st.just("ml")),
    st.tuples(st.just("add_team_member"), st.just("ml"), NAMES.map("user:{}".format)),
    st.tuples(st.just("remove_team_member"), st.just("ml"), NAMES.map("user:{}".format)),
    st.tuples(st.just("create_service_account"), st.just("ci")),
    st.tuples(st.just("create_role"), st.sampled_from(["custom_a", "custom_b"]), st.just("tenant"), PERMS,
              st.sampled_from([None, "viewer", "custom_a"])),
    st.tuples(st.just("delete_role"), st.sampled_from(["custom_a", "custom_b"])),
    st.tuples(st.just("assign_role"), ROLES, PRINCIPALS, TENANTS),
    st.tuples(st.just("unassign_role"), ROLES, PRINCIPALS, TENANTS),
    st.tuples(st.just("register_connector"), st.just("aws"), TENANTS),
    st.tuples(st.just("record_connector_access"), st.just("aws"), TENANTS, NAMES.map("user:{}".format),
              st.sampled_from(["allowed", "denied"])),
)


def apply_random(led: AccessLedger, commands) -> None:
    for day, (name, *args) in enumerate(commands):
        try:
            getattr(led, name)(*args, at=f"2026-02-{1 + day // 4:02d}T{day % 4:02d}:00:00Z", reason="R-1")
        except E.LedgerError:
            pass  # refused commands write nothing; what remains is a random valid history


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=st.lists(COMMANDS, max_size=40))
def test_round_trip_property(tmp_path_factory, commands):
    tmp = tmp_path_factory.mktemp("rt")
    a = AccessLedger.open(str(tmp / "a.db"), create=True)
    a.init(at="2026-01-01T00:00:00Z")
    apply_random(a, commands)
    exported = list(a.export_lines())
    b = AccessLedger.open(str(tmp / "b.db"), create=True)
    b.import_lines(exported)
    assert list(b.export_lines()) == exported
    assert b.grants() == a.grants()
    assert b.entities("role") == a.entities("role")
    assert b.verify().ok and a.verify().ok
    a.close()
    b.close()


def test_usage_after_its_tenant_is_deleted_in_the_same_import_is_refused(url_factory):
    led = AccessLedger.open(url_factory(), create=True)
    access = {"type": "ConnectorSecretAccessed", "at": "2026-01-05T00:00:00Z", "actor": "system",
              "connector": "aws-prod", "tenant": "prod", "principal": "user:alice", "outcome": "allowed"}
    lines = HISTORY[:16] + [access, {"type": "TenantDeleted", "at": "2026-01-05T00:00:00Z", "actor": "system",
                                     "tenant": "prod"}, access]
    with pytest.raises(E.DeletedTenant) as info:
        led.import_lines(jsonl(lines))
    assert str(info.value) == "line 19: tenant: tenant 'prod' was deleted: nothing may target it"
    assert led.head() == 0
    led.close()
