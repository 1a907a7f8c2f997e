"""JSONL import and export: atomic, line-numbered errors, idempotent by id, round trip."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import apply_commands, commands

from ledger import errors as E
from ledger.app import AccessLedger

HISTORY = [
    {
        "type": "OrganizationCreated",
        "at": "2026-01-01T00:00:00Z",
        "actor": "system",
        "name": "acme",
        "preset": "zenml-pro",
    },
    {
        "type": "TenantCreated",
        "at": "2026-01-01T00:00:00Z",
        "actor": "user:root",
        "tenant": "prod",
        "display_name": "Production",
    },
    {"type": "TenantCreated", "at": "2026-01-01T00:00:01Z", "actor": "user:root", "tenant": "old"},
    {
        "type": "TenantRenamed",
        "at": "2026-01-01T00:00:02Z",
        "actor": "user:root",
        "tenant": "prod",
        "display_name": "Prod",
    },
    {
        "type": "UserCreated",
        "at": "2026-01-02T00:00:00Z",
        "actor": "user:root",
        "user": "alice",
        "email": "alice@example.com",
    },
    {"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "user": "bob"},
    {"type": "ServiceAccountCreated", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "service_account": "ci-bot"},
    {"type": "TeamCreated", "at": "2026-01-02T00:00:00Z", "actor": "user:root", "team": "research"},
    {
        "type": "TeamMemberAdded",
        "at": "2026-01-02T00:00:00Z",
        "actor": "user:root",
        "team": "research",
        "member": "user:alice",
    },
    {
        "type": "TeamMemberAdded",
        "at": "2026-01-02T00:00:00Z",
        "actor": "user:root",
        "team": "research",
        "member": "service_account:ci-bot",
    },
    {
        "type": "RoleCreated",
        "at": "2026-01-03T00:00:00Z",
        "actor": "user:root",
        "role": "ds",
        "scope": "tenant",
        "base": "editor",
        "permissions": ["model:promote"],
        "description": "Data Scientist",
        "reason": "SEC-1",
    },
    {
        "type": "RolePermissionsChanged",
        "at": "2026-01-03T00:00:00Z",
        "actor": "user:root",
        "role": "ds",
        "add": ["model_version:promote"],
        "remove": ["model:promote"],
    },
    {
        "type": "RoleAssigned",
        "at": "2026-01-04T00:00:00Z",
        "actor": "user:root",
        "role": "ds",
        "principal": "team:research",
        "tenant": "prod",
        "reason": "SEC-2",
        "id": "grant-1",
    },
    {
        "type": "RoleAssigned",
        "at": "2026-01-04T00:00:00Z",
        "actor": "user:root",
        "role": "viewer",
        "principal": "user:bob",
        "tenant": "prod",
        "resource": "model/fraud",
        "expires_at": "2026-02-01T00:00:00Z",
    },
    {
        "type": "RoleAssigned",
        "at": "2026-01-04T00:00:00Z",
        "actor": "user:root",
        "role": "org_viewer",
        "principal": "user:bob",
    },
    {
        "type": "ConnectorRegistered",
        "at": "2026-01-05T00:00:00Z",
        "actor": "user:root",
        "connector": "aws-prod",
        "tenant": "prod",
        "connector_type": "aws",
    },
    {
        "type": "ConnectorSecretAccessed",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "connector": "aws-prod",
        "tenant": "prod",
        "principal": "service_account:ci-bot",
        "outcome": "allowed",
        "context": "run 17",
    },
    {
        "type": "ResourceAccessed",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "principal": "user:bob",
        "tenant": "prod",
        "resource": "model/fraud",
        "action": "read",
        "outcome": "denied",
        "id": "acc-1",
    },
    {
        "type": "ConnectorChanged",
        "at": "2026-01-05T00:00:00Z",
        "actor": "user:root",
        "connector": "aws-prod",
        "tenant": "prod",
        "owner": "user:alice",
        "connector_type": "aws",
        "auth_method": "secret-key",
        "resource_types": ["s3-bucket", "aws-generic"],
        "expires_at": "2027-01-01T00:00:00Z",
        "labels": ["env=prod"],
    },
    {
        "type": "ApiKeyCreated",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "service_account": "ci-bot",
        "api_key": "k1",
    },
    {
        "type": "ApiKeyRotated",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "service_account": "ci-bot",
        "api_key": "k1",
        "rotated_at": "2026-01-04T23:00:00Z",
    },
    {
        "type": "ApiKeyUsed",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "service_account": "ci-bot",
        "api_key": "k1",
        "last_login": "2026-01-05T00:00:00Z",
    },
    {
        "type": "ApiKeyDeactivated",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "service_account": "ci-bot",
        "api_key": "k1",
    },
    {
        "type": "ApiKeyReactivated",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "service_account": "ci-bot",
        "api_key": "k1",
    },
    {
        "type": "ApiKeyDeleted",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "service_account": "ci-bot",
        "api_key": "k1",
    },
    {"type": "ProjectCreated", "at": "2026-01-05T00:00:00Z", "actor": "system", "project": "default", "tenant": "prod"},
    {"type": "ProjectDeleted", "at": "2026-01-05T00:00:00Z", "actor": "system", "project": "default", "tenant": "prod"},
    {
        "type": "RoleUnassigned",
        "at": "2026-01-06T00:00:00Z",
        "actor": "user:root",
        "role": "org_viewer",
        "principal": "user:bob",
    },
    {"type": "UserDeactivated", "at": "2026-01-06T00:00:00Z", "actor": "user:root", "user": "bob"},
    {"type": "UserReactivated", "at": "2026-01-07T00:00:00Z", "actor": "user:root", "user": "bob"},
    {
        "type": "ServiceAccountDeactivated",
        "at": "2026-01-07T00:00:00Z",
        "actor": "user:root",
        "service_account": "ci-bot",
    },
    {
        "type": "ServiceAccountReactivated",
        "at": "2026-01-07T00:00:00Z",
        "actor": "user:root",
        "service_account": "ci-bot",
    },
    {
        "type": "TeamMemberRemoved",
        "at": "2026-01-08T00:00:00Z",
        "actor": "user:root",
        "team": "research",
        "member": "user:alice",
    },
    {
        "type": "ConnectorDeleted",
        "at": "2026-01-08T00:00:00Z",
        "actor": "user:root",
        "connector": "aws-prod",
        "tenant": "prod",
    },
    {
        "type": "RoleCreated",
        "at": "2026-01-08T00:00:00Z",
        "actor": "user:root",
        "role": "tmp",
        "scope": "tenant",
        "permissions": [],
    },
    {"type": "RoleDeleted", "at": "2026-01-08T00:00:00Z", "actor": "user:root", "role": "tmp"},
    {"type": "TeamCreated", "at": "2026-01-08T00:00:00Z", "actor": "user:root", "team": "gone"},
    {"type": "TeamDeleted", "at": "2026-01-09T00:00:00Z", "actor": "user:root", "team": "gone"},
    {"type": "TenantDeleted", "at": "2026-01-09T00:00:00Z", "actor": "user:root", "tenant": "old"},
    {
        "type": "ReviewStarted",
        "at": "2026-01-09T00:00:00Z",
        "actor": "user:root",
        "campaign": "q1",
        "tenants": ["prod"],
        "reviewer": "user:alice",
        "reviewers": ["team:research=user:alice"],
        "fallback_reviewer": "user:bob",
        "privileged_only": False,
        "due": "2026-01-20T00:00:00Z",
        "as_of_position": 39,  # the position before it (events the ZenML sync records come first)
        "items": 2,
        "population_sha256": "3ffc2a66cade5d9f8429ea027b2db2ec8094bd1db01b66239b377a95e1298e7a",
    },
    {"type": "UserCreated", "at": "2026-01-09T00:00:00Z", "actor": "user:root", "user": "carol"},
    {
        "type": "ReviewReassigned",
        "at": "2026-01-09T00:00:00Z",
        "actor": "user:root",
        "campaign": "q1",
        "items": [1],
        "reviewer": "user:carol",
        "reason": "alice is away",
    },
    {
        "type": "ReviewDecided",
        "at": "2026-01-09T00:00:00Z",
        "actor": "user:alice",
        "campaign": "q1",
        "item": 2,
        "decision": "revoke",
        "reviewer": "user:alice",
        "reason": "no longer needed",
    },
    {
        "type": "ReviewClosed",
        "at": "2026-01-09T00:00:00Z",
        "actor": "user:root",
        "campaign": "q1",
        "undecided": "exception",
        "auto_revoke": True,
    },
    {
        "type": "RoleUnassigned",
        "at": "2026-01-09T00:00:00Z",
        "actor": "user:root",
        "role": "viewer",
        "principal": "user:bob",
        "tenant": "prod",
        "resource": "model/fraud",
        "reason": "access review q1 item 2: revoke",
    },
    {
        "type": "TokenIssued",
        "at": "2026-01-09T00:00:00Z",
        "actor": "user:root",
        "token_id": "tok_ci",
        "principal": "service_account:ci-bot",
        "scopes": ["read", "report"],
        "expires_at": "2026-02-01T00:00:00Z",
        "secret_sha256": "5e" * 32,
        "reason": "PLAT-1",
    },
    {"type": "TokenUsed", "at": "2026-01-09T00:00:00Z", "actor": "service_account:ci-bot", "token_id": "tok_ci"},
    {"type": "TokenRevoked", "at": "2026-01-09T00:00:00Z", "actor": "user:root", "token_id": "tok_ci"},
    {
        "type": "FindingAccepted",
        "at": "2026-01-09T00:00:00Z",
        "actor": "service_account:ci-bot",
        "finding": "F-71e2be7e0704f8f9",
        "audit": "hygiene",
        "kind": "self-grant",
        "principal": "user:root",
        "scope": "tenant:prod",
        "cause": "p:3",
        "until": "2026-06-01T00:00:00Z",
        "reason": "SEC-88",
    },
    {
        "type": "FindingSuppressed",
        "at": "2026-01-09T00:00:00Z",
        "actor": "service_account:ci-bot",
        "finding": "F-71e2be7e0704f8f9",
        "audit": "hygiene",
        "kind": "self-grant",
        "principal": "user:root",
        "scope": "tenant:prod",
        "cause": "p:3",
        "reason": "SEC-89",
    },
    {
        "type": "FindingReopened",
        "at": "2026-01-09T00:00:00Z",
        "actor": "service_account:ci-bot",
        "finding": "F-71e2be7e0704f8f9",
        "reason": "again",
    },
    {
        "type": "SuppressionRuleAdded",
        "at": "2026-01-09T00:00:00Z",
        "actor": "service_account:ci-bot",
        "rule": "R-dd180c5f118bdcf5",
        "audit": "hygiene",
        "kind": "empty-team",
        "principal": "team:research",
        "reason": "kept empty on purpose",
    },
    {
        "type": "FindingReopened",
        "at": "2026-01-09T00:00:00Z",
        "actor": "service_account:ci-bot",
        "rule": "R-dd180c5f118bdcf5",
        "reason": "again",
    },
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
    for kind in ("user", "team", "role", "tenant", "service_account", "connector", "api_key", "project"):
        assert b.entities(kind) == a.entities(kind)
    a.close()
    b.close()


def test_export_period_is_inclusive_of_both_ends(url_factory):
    led = AccessLedger.open(url_factory(), create=True)
    led.import_lines(jsonl(HISTORY))
    lines = [json.loads(x) for x in led.export_lines("2026-01-04T00:00:00Z", "2026-01-05T00:00:00Z")]
    assert {e["at"] for e in lines} == {"2026-01-04T00:00:00Z", "2026-01-05T00:00:00Z"}
    assert len(lines) == 15  # six, and the nine events of a ZenML sync on 2026-01-05
    assert list(led.export_lines("2027-01-01T00:00:00Z")) == []
    led.close()


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (b"{not json", "line 3: line is not valid JSON"),
        (b"[1, 2]", "line 3: line is not a JSON object"),
        (
            b'{"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system"}',
            "line 3: user: required field is missing",
        ),
        (
            b'{"type": "UserCreated", "at": "2026-01-02T00:00:00", "actor": "system", "user": "x"}',
            "line 3: at: '2026-01-02T00:00:00' has no time zone (add Z or +00:00)",
        ),
        (
            b'{"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system", "user": "x", "password": "p"}',
            "line 3: password: unknown field (the ledger stores only the documented fields, never secret values)",
        ),
        (
            b'{"type": "Nope", "at": "2026-01-02T00:00:00Z", "actor": "system"}',
            "line 3: type: 'Nope' is not an event type",
        ),
        (
            b'{"type": "UserCreated", "at": "2026-01-02T00:00:00Z", "actor": "system", "user": 7}',
            "line 3: user: Input should be a valid string",
        ),
        (
            b'{"type": "RoleAssigned", "at": "2026-01-02T00:00:00Z", "actor": "system", "role": "ghost", '
            b'"principal": "user:a", "tenant": "prod"}',
            "line 3: role: unknown role 'ghost'",
        ),
        (
            b'{"type": "UserCreated", "at": "2025-12-31T00:00:00Z", "actor": "system", "user": "x"}',
            "line 3: at: 2025-12-31T00:00:00Z is before the ledger's newest event (2026-01-01T00:00:00Z); the ledger is "
            "append-only in time",
        ),
    ],
)
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
    access = {
        "type": "ResourceAccessed",
        "at": "2026-01-09T00:00:00Z",
        "actor": "system",
        "principal": "user:bob",
        "tenant": "prod",
        "resource": "model/fraud",
        "action": "read",
        "outcome": "allowed",
        "id": "dup",
    }
    # The repeat lands in a later chunk than the first, across a flush.
    filler = [dict(access, id=f"f{i}") for i in range(6000)]
    result = led.import_lines(jsonl(HISTORY + [access] + filler + [access]))
    assert result.skipped == 1
    assert result.written == len(HISTORY) + 1 + len(filler)
    led.close()


# -- the round-trip property over random valid histories -------------------------------------

# Names with quotes, semicolons and non-ASCII letters travel through export and import unchanged.
COMMANDS = commands(st.sampled_from(["alice", "bob", "carol", "o'brien", "semi;colon", "ünïcode"]))


def apply_random(led: AccessLedger, drawn) -> None:
    apply_commands(led, drawn, lambda i: f"2026-02-{1 + i // 4:02d}T{i % 4:02d}:00:00Z")


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


@pytest.mark.parametrize(
    "access",
    [
        {
            "type": "ConnectorSecretAccessed",
            "at": "2026-01-05T00:00:00Z",
            "actor": "system",
            "connector": "aws-prod",
            "tenant": "prod",
            "principal": "user:alice",
            "outcome": "allowed",
        },
        {
            "type": "ResourceAccessed",
            "at": "2026-01-05T00:00:00Z",
            "actor": "system",
            "principal": "user:alice",
            "tenant": "prod",
            "resource": "model/fraud",
            "action": "read",
            "outcome": "allowed",
        },
    ],
    ids=["secret", "resource"],
)
def test_usage_after_its_tenant_is_deleted_in_the_same_import_is_refused(url_factory, access):
    led = AccessLedger.open(url_factory(), create=True)
    lines = HISTORY[:16] + [
        access,
        {"type": "TenantDeleted", "at": "2026-01-05T00:00:00Z", "actor": "system", "tenant": "prod"},
        access,
    ]
    with pytest.raises(E.DeletedTenant) as info:
        led.import_lines(jsonl(lines))
    assert str(info.value) == "line 19: tenant: tenant 'prod' was deleted: nothing may target it"
    assert led.head() == 0
    led.close()


def test_secret_access_after_its_connector_is_deleted_in_the_same_import_is_refused(url_factory):
    led = AccessLedger.open(url_factory(), create=True)
    access = {
        "type": "ConnectorSecretAccessed",
        "at": "2026-01-05T00:00:00Z",
        "actor": "system",
        "connector": "aws-prod",
        "tenant": "prod",
        "principal": "user:alice",
        "outcome": "allowed",
    }
    lines = HISTORY[:16] + [
        access,
        {
            "type": "ConnectorDeleted",
            "at": "2026-01-05T00:00:00Z",
            "actor": "system",
            "connector": "aws-prod",
            "tenant": "prod",
        },
        access,
    ]
    with pytest.raises(E.UnknownEntity) as info:
        led.import_lines(jsonl(lines))
    assert str(info.value) == "line 19: connector: unknown service connector 'aws-prod' in tenant 'prod'"
    assert led.head() == 0
    led.close()


# -- one import against one command at a time: the same events accepted, the same first refusal ------

EV_NAMES = st.sampled_from(["alice", "bob", "carol"])
EV_TENANTS = st.sampled_from(["prod", "dev"])
EV_PRINCIPALS = st.one_of(
    EV_NAMES.map("user:{}".format), st.sampled_from(["team:ml", "service_account:ci", "user:nobody"])
)
EV_RESOURCES = st.sampled_from(["model/fraud", "stack/gpu", "secret/aws", "team/ml", "role/x", "bogus/y"])

RAW_EVENTS = st.one_of(
    st.builds(lambda t: {"type": "TenantCreated", "tenant": t}, EV_TENANTS),
    st.builds(lambda t: {"type": "TenantDeleted", "tenant": t}, EV_TENANTS),
    st.builds(lambda n: {"type": "UserCreated", "user": n}, EV_NAMES),
    st.builds(lambda n: {"type": "UserDeactivated", "user": n}, EV_NAMES),
    st.just({"type": "ServiceAccountCreated", "service_account": "ci"}),
    st.just({"type": "TeamCreated", "team": "ml"}),
    st.just({"type": "TeamDeleted", "team": "ml"}),
    st.builds(lambda n: {"type": "TeamMemberAdded", "team": "ml", "member": f"user:{n}"}, EV_NAMES),
    st.builds(lambda n: {"type": "TeamMemberRemoved", "team": "ml", "member": f"user:{n}"}, EV_NAMES),
    st.builds(
        lambda r, b: {
            "type": "RoleCreated",
            "role": r,
            "scope": "tenant",
            "permissions": ["model:read"],
            **({"base": b} if b else {}),
        },
        st.sampled_from(["custom_a", "custom_b"]),
        st.sampled_from([None, "viewer", "custom_a"]),
    ),
    st.builds(lambda r: {"type": "RoleDeleted", "role": r}, st.sampled_from(["custom_a", "custom_b"])),
    st.builds(
        lambda r, p, t: {"type": "RoleAssigned", "role": r, "principal": p, "tenant": t},
        st.sampled_from(["viewer", "custom_a", "custom_b"]),
        EV_PRINCIPALS,
        EV_TENANTS,
    ),
    st.builds(
        lambda r, p, t: {"type": "RoleUnassigned", "role": r, "principal": p, "tenant": t},
        st.sampled_from(["viewer", "custom_a", "custom_b"]),
        EV_PRINCIPALS,
        EV_TENANTS,
    ),
    st.builds(lambda t: {"type": "ConnectorRegistered", "connector": "aws", "tenant": t}, EV_TENANTS),
    st.builds(lambda t: {"type": "ConnectorDeleted", "connector": "aws", "tenant": t}, EV_TENANTS),
    st.builds(
        lambda t, p: {
            "type": "ConnectorSecretAccessed",
            "connector": "aws",
            "tenant": t,
            "principal": p,
            "outcome": "allowed",
        },
        EV_TENANTS,
        EV_PRINCIPALS,
    ),
    st.builds(
        lambda p, t, r, a: {
            "type": "ResourceAccessed",
            "principal": p,
            "resource": r,
            "action": a,
            "outcome": "allowed",
            **({"tenant": t} if t else {}),
        },
        EV_PRINCIPALS,
        st.one_of(st.none(), EV_TENANTS),
        EV_RESOURCES,
        st.sampled_from(["read", "fly"]),
    ),
)


def _dated(events: list[dict]) -> list[dict]:
    head = {"type": "OrganizationCreated", "name": "acme", "preset": "zenml-pro"}
    return [
        dict(ev, at=f"2026-02-{1 + i // 24:02d}T{i % 24:02d}:00:00Z", actor="user:root")
        for i, ev in enumerate([head, *events])
    ]


def _one_at_a_time(url: str, events: list[dict]) -> tuple[list[bytes], tuple[int, type, str] | None]:
    """The oracle: each event appended as its own command, up to the first refusal."""
    led = AccessLedger.open(url, create=True)
    try:
        for i, ev in enumerate(events):
            try:
                led.append(ev)
            except E.LedgerError as exc:
                return list(led.export_lines()), (i + 1, type(exc), str(exc))
        return list(led.export_lines()), None
    finally:
        led.close()


def _check_import_against_oracle(oracle_url: str, url: str, events: list[dict], *, split: int = 0) -> None:
    """Import `events` (up to `split` of them in an earlier import) and compare with the oracle."""
    expected, refusal = _one_at_a_time(oracle_url, events)
    if refusal is not None:
        split = min(split, refusal[0] - 1)  # the earlier import holds only accepted events
    led = AccessLedger.open(url, create=True)
    try:
        if split:
            led.import_lines(jsonl(events[:split]))
        before = led.head()
        if refusal is None:
            led.import_lines(jsonl(events[split:]))
            assert list(led.export_lines()) == expected
            assert led.verify().ok
        else:
            line, kind, message = refusal
            with pytest.raises(E.LedgerError) as info:
                led.import_lines(jsonl(events[split:]))
            assert type(info.value) is kind
            assert str(info.value).startswith(f"line {line - split}: ")
            assert str(info.value).endswith(message)
            assert led.head() == before
    finally:
        led.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(RAW_EVENTS, max_size=30), small=st.booleans(), split=st.integers(0, 3))
def test_one_import_accepts_and_refuses_exactly_as_one_command_at_a_time(
    tmp_path_factory, monkeypatch, events, small, split
):
    """Into an empty ledger the import looks nothing up (the caches hold all there is) and usage
    events are checked by parts seen valid; with tiny limits the caches are trimmed and flushed
    every few events. Either way, the import accepts and refuses exactly what single commands do."""
    with monkeypatch.context() as m:
        if small:
            m.setattr("ledger.app.BATCH", 3)
            m.setattr("ledger.app.STREAM_CACHE", 2)
            m.setattr("ledger.model.CACHE_LIMIT", 4)
            m.setattr("ledger.model.USAGE_LIMIT", 2)
        tmp = tmp_path_factory.mktemp("oracle")
        events = _dated(events)
        _check_import_against_oracle(str(tmp / "one.db"), str(tmp / "import.db"), events, split=min(split, len(events)))


def test_import_with_trimmed_caches_matches_one_command_at_a_time(url_factory, monkeypatch):
    """A long history through tiny caches on both backends: streams are versioned from the table
    once their cache is trimmed, never restarted at version 1."""
    monkeypatch.setattr("ledger.app.BATCH", 5)
    monkeypatch.setattr("ledger.app.STREAM_CACHE", 3)
    monkeypatch.setattr("ledger.model.CACHE_LIMIT", 6)
    monkeypatch.setattr("ledger.model.USAGE_LIMIT", 2)
    events = [
        {"type": "TenantCreated", "tenant": "prod"},
        {"type": "ConnectorRegistered", "connector": "aws", "tenant": "prod"},
    ]
    for i in range(12):
        user = f"u{i % 5}"
        if i < 5:
            events.append({"type": "UserCreated", "user": user})
        events += [
            {"type": "RoleAssigned", "role": "viewer", "principal": f"user:{user}", "tenant": "prod"},
            {
                "type": "ConnectorSecretAccessed",
                "connector": "aws",
                "tenant": "prod",
                "principal": f"user:{user}",
                "outcome": "allowed",
            },
            {"type": "RoleUnassigned", "role": "viewer", "principal": f"user:{user}", "tenant": "prod"},
        ]
    events.append({"type": "TenantDeleted", "tenant": "prod"})
    events.append(
        {
            "type": "ConnectorSecretAccessed",
            "connector": "aws",
            "tenant": "prod",
            "principal": "user:u1",
            "outcome": "allowed",
        }
    )
    events = _dated(events)
    for split in (0, 4):
        _check_import_against_oracle(url_factory(), url_factory(), events, split=split)
        _check_import_against_oracle(url_factory(), url_factory(), events[:-1], split=split)


def test_import_names_a_name_created_earlier_in_the_same_import_as_the_closest(tmp_path):
    """A misspelling of a name the same import created earlier gets the "did you mean" a single command gives."""
    events = _dated(
        [
            {"type": "TenantCreated", "tenant": "prod"},
            {"type": "UserCreated", "user": "roberta"},
            {"type": "RoleAssigned", "role": "viewer", "principal": "user:robertta", "tenant": "prod"},
        ]
    )
    led = AccessLedger.open(str(tmp_path / "l.db"), create=True)
    try:
        with pytest.raises(E.UnknownEntity) as info:
            led.import_lines(jsonl(events))
        assert str(info.value).startswith("line 4: ") and "did you mean 'roberta'" in str(info.value)
        assert led.head() == 0
    finally:
        led.close()
    _check_import_against_oracle(str(tmp_path / "one.db"), str(tmp_path / "import.db"), events)
