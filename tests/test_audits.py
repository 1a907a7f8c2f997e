"""Each audit on one small hand-built history, with the findings written out."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import COMMANDS
from test_warehouse import build, instants_of, prelude

from ledger.app import AccessLedger
from projections.answers import diff
from projections.pit import Timeline
from reports.audits import AUDITS, run_audit
from reports.errors import AuditParameterError, RulesError, UnknownAudit
from reports.warehouse import Warehouse


def d(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


def history(led: AccessLedger) -> None:
    """Positions in the comments (1 is the organization, from the `led` fixture)."""
    led.create_tenant("prod", at=d(1))  # 2
    led.create_tenant("dev", at=d(1))  # 3
    for user in ("alice", "bob", "carol", "dave"):  # 4-7
        led.create_user(user, at=d(1))
    led.create_service_account("ci", at=d(1))  # 8
    led.create_team("research", at=d(1))  # 9
    led.create_team("empty", at=d(1))  # 10
    led.add_team_member("research", "user:alice", at=d(2))  # 11
    led.create_role("ds", "tenant", ["model:promote", "pipeline:create"], base="editor", at=d(2), reason="SEC-1")  # 12
    led.create_role("promoter", "tenant", ["model_version:promote"], at=d(2), reason="SEC-2")  # 13
    led.create_role("unused_role", "tenant", ["model:read"], at=d(2), reason="SEC-3")  # 14
    led.assign_role("ds", "team:research", tenant="prod", at=d(3), actor="user:carol", reason="SEC-4")  # 15
    led.assign_role("promoter", "user:alice", tenant="prod", at=d(3), actor="user:carol", reason="SEC-5")  # 16
    led.assign_role("viewer", "user:bob", tenant="prod", expires_at=d(10), at=d(3), actor="user:carol")  # 17
    led.assign_role("admin", "user:carol", tenant="prod", at=d(3), actor="user:carol")  # 18
    led.assign_role("org_admin", "user:carol", at=d(3), reason="bootstrap")  # 19
    led.assign_role(
        "viewer", "service_account:ci", tenant="dev", resource="service_connector/aws", at=d(3), reason="CI"
    )  # 20
    led.register_connector("aws", "prod", at=d(3), reason="INFRA-1")  # 21
    led.register_connector("aws", "dev", at=d(3), reason="INFRA-2")  # 22
    led.record_connector_access("aws", "prod", "user:carol", "allowed", at=d(4))  # 23
    led.record_connector_access("aws", "prod", "user:bob", "allowed", at=d(4, 1))  # 24
    led.record_connector_access("aws", "prod", "user:dave", "denied", at=d(4, 2))  # 25
    led.record_access("user:alice", "promote", "model/fraud", "allowed", tenant="prod", at=d(5))  # 26
    led.record_access("user:alice", "read", "model/fraud", "allowed", tenant="prod", at=d(5, 1))  # 27
    led.deactivate_user("dave", at=d(6), reason="HR-1 leaver")  # 28
    led.assign_role("viewer", "user:dave", tenant="dev", at=d(6, 1), reason="ticket-2")  # 29
    led.change_role(
        "ds", add=["model_version:promote"], remove=["model:promote"], at=d(7), actor="user:alice", reason="SEC-9"
    )  # 30
    led.remove_team_member("research", "user:alice", at=d(8), reason="moved")  # 31
    led.create_role("model_owner", "tenant", ["model:*"], at=d(9), reason="SEC-10")  # 32
    led.create_role("secret_reader", "tenant", ["service_connector:read_secret_value"], at=d(9), reason="SEC-11")  # 33


@pytest.fixture
def wh(led, tmp_path):
    history(led)
    warehouse = Warehouse.open(led, tmp_path / "w.duckdb")
    yield warehouse
    warehouse.close()


def findings(wh: Warehouse, name: str, columns: list[str], **params) -> list[tuple]:
    result = run_audit(wh, name, **params)
    assert {"who", "where", "what", "since", "positions"} <= set(result.columns), result.columns
    return [tuple(row[c] for c in columns) for row in result.rows]


def test_review_lists_every_path_with_its_last_use(wh):
    columns = [
        "who",
        "where",
        "what",
        "resource_scope",
        "role",
        "via_team",
        "from_role",
        "since",
        "last_used",
        "uses",
        "positions",
    ]
    assert findings(wh, "review", columns, at=d(20)) == [
        (
            "service_account:ci",
            "tenant:dev",
            "*:read",
            "service_connector/aws",
            "viewer",
            None,
            "viewer",
            d(3),
            None,
            0,
            [20, 1],
        ),
        (
            "user:alice",
            "tenant:prod",
            "model_version:promote",
            None,
            "promoter",
            None,
            "promoter",
            d(3),
            None,
            0,
            [16, 13],
        ),
        ("user:carol", "organization", "billing:*", None, "org_admin", None, "org_admin", d(3), None, 0, [19, 1]),
        ("user:carol", "organization", "member:*", None, "org_admin", None, "org_admin", d(3), None, 0, [19, 1]),
        ("user:carol", "organization", "organization:*", None, "org_admin", None, "org_admin", d(3), None, 0, [19, 1]),
        ("user:carol", "organization", "role:*", None, "org_admin", None, "org_admin", d(3), None, 0, [19, 1]),
        ("user:carol", "organization", "team:*", None, "org_admin", None, "org_admin", d(3), None, 0, [19, 1]),
        ("user:carol", "organization", "tenant:*", None, "org_admin", None, "org_admin", d(3), None, 0, [19, 1]),
        ("user:carol", "tenant:prod", "*:*", None, "admin", None, "admin", d(3), d(4), 1, [18, 1]),
    ]


def test_review_and_least_privilege_count_for_a_resource_scoped_grant_only_the_uses_of_that_resource(led):
    led.create_tenant("prod", at=d(1))  # 2
    led.create_user("erin", at=d(1))  # 3
    led.create_role("reader", "tenant", ["service_connector:read_secret_value"], at=d(1))  # 4
    led.assign_role("reader", "user:erin", tenant="prod", resource="service_connector/aws", at=d(2))  # 5
    led.assign_role("viewer", "user:erin", tenant="prod", resource="model/fraud", at=d(2))  # 6
    led.register_connector("aws", "prod", at=d(2))  # 7
    led.register_connector("gcp", "prod", at=d(2))  # 8
    led.record_connector_access("aws", "prod", "user:erin", "allowed", at=d(3))  # 9
    led.record_connector_access("aws", "prod", "user:erin", "allowed", at=d(4))  # 10
    led.record_connector_access("gcp", "prod", "user:erin", "allowed", at=d(4, 1))  # 11
    led.record_access("user:erin", "read", "model/fraud", "allowed", tenant="prod", at=d(5))  # 12
    led.record_access("user:erin", "read", "model/churn", "allowed", tenant="prod", at=d(5, 1))  # 13
    led.record_access("user:erin", "read", "model/fraud", "denied", tenant="prod", at=d(5, 2))  # 14
    columns = ["what", "resource_scope", "role", "last_used", "uses", "last_used_position"]
    with Warehouse.open(led, ":memory:") as warehouse:
        for at in (d(6), None):  # a past instant (a scan of the uses) and now (the sync's totals)
            assert findings(warehouse, "review", columns, at=at) == [
                ("*:read", "model/fraud", "viewer", d(5), 1, 12),
                ("service_connector:read_secret_value", "service_connector/aws", "reader", d(4), 2, 10),
            ]
        assert findings(warehouse, "review", columns, at=d(3, 1)) == [
            ("*:read", "model/fraud", "viewer", None, 0, None),
            ("service_connector:read_secret_value", "service_connector/aws", "reader", d(3), 1, 9),
        ]
        # least-privilege: a scoped grant is used only by uses of its resource in the window
        unused = ["finding", "what", "resource_scope", "unused_permissions", "used_permissions"]
        assert [
            r
            for r in findings(warehouse, "least-privilege", unused, at=d(6), window="30d")
            if r[0] == "unused-permissions"
        ] == []
        assert [
            r
            for r in findings(warehouse, "least-privilege", unused, at=d(6), window="2d")
            if r[0] == "unused-permissions"
        ] == [
            ("unused-permissions", "role reader", "service_connector/aws", ["service_connector:read_secret_value"], []),
        ]
        assert [
            r
            for r in findings(warehouse, "least-privilege", unused, at=d(5, 2), window="1h")
            if r[0] == "unused-permissions"
        ] == [
            ("unused-permissions", "role reader", "service_connector/aws", ["service_connector:read_secret_value"], []),
            ("unused-permissions", "role viewer", "model/fraud", ["*:read"], []),
        ]


def test_review_of_one_principal_at_a_past_instant_shows_team_paths_and_inherited_permissions(wh):
    columns = ["who", "where", "what", "role", "via_team", "from_role", "since", "last_used", "uses", "positions"]
    assert findings(wh, "review", columns, at=d(5), principal="user:alice") == [
        ("user:alice", "tenant:prod", "*:create", "ds", "research", "editor", d(3), None, 0, [15, 11, 1]),
        ("user:alice", "tenant:prod", "*:read", "ds", "research", "editor", d(3), None, 0, [15, 11, 1]),
        ("user:alice", "tenant:prod", "*:share", "ds", "research", "editor", d(3), None, 0, [15, 11, 1]),
        # used at exactly the instant asked about: that use counts
        ("user:alice", "tenant:prod", "model:promote", "ds", "research", "ds", d(3), d(5), 1, [15, 11, 12]),
        ("user:alice", "tenant:prod", "model_version:promote", "promoter", None, "promoter", d(3), None, 0, [16, 13]),
        ("user:alice", "tenant:prod", "pipeline:create", "ds", "research", "ds", d(3), None, 0, [15, 11, 12]),
    ]


def test_least_privilege_finds_unused_permissions_dormant_accounts_and_smallest_roles(wh):
    columns = [
        "finding",
        "who",
        "where",
        "what",
        "since",
        "unused_permissions",
        "used_permissions",
        "held_roles",
        "positions",
    ]
    assert findings(wh, "least-privilege", columns, at=d(20), window="30d") == [
        (
            "unused-permissions",
            "service_account:ci",
            "tenant:dev",
            "role viewer",
            d(3),
            ["*:read"],
            [],
            ["viewer"],
            [20],
        ),
        (
            "unused-permissions",
            "user:alice",
            "tenant:prod",
            "role promoter",
            d(3),
            ["model_version:promote"],
            [],
            ["promoter"],
            [16],
        ),
        (
            "unused-permissions",
            "user:carol",
            "organization",
            "role org_admin",
            d(3),
            ["billing:*", "member:*", "organization:*", "role:*", "team:*", "tenant:*"],
            [],
            ["org_admin"],
            [19],
        ),
        (
            "dormant-principal",
            "service_account:ci",
            "organization",
            "no recorded activity",
            d(1),
            None,
            None,
            ["viewer"],
            [8],
        ),
        (
            "smallest-role",
            "user:alice",
            "tenant:prod",
            "role model_owner (10 permissions)",
            d(5),
            None,
            ["model:promote", "model:read"],
            ["promoter"],
            [32, 27],
        ),
        # bob's secret read was not authorised (he held viewer): no role is derived from it
        (
            "smallest-role",
            "user:carol",
            "tenant:prod",
            "role secret_reader (1 permission)",
            d(4),
            None,
            ["service_connector:read_secret_value"],
            ["admin"],
            [33, 23],
        ),
    ]


def test_least_privilege_counts_changes_as_activity_and_sizes_roles_on_authorised_uses_only(led, tmp_path):
    """#24 item 8: an admin who only makes changes is not dormant; an unauthorised secret read, and uses
    after a deactivation, do not make the smallest role bigger."""
    led.create_tenant("prod", at=d(1))  # 2
    for user in ("ann", "vic", "lea"):  # 3-5
        led.create_user(user, at=d(1))
    led.register_connector("aws", "prod", at=d(1))  # 6
    led.assign_role("admin", "user:ann", tenant="prod", at=d(2))  # 7
    led.assign_role("viewer", "user:vic", tenant="prod", at=d(2))  # 8
    led.assign_role("viewer", "user:lea", tenant="prod", at=d(2))  # 9
    for i in range(5):  # 10-14
        led.create_tenant(f"t{i}", at=d(3), actor="user:ann", reason="T-1")
    led.record_access("user:vic", "read", "model/m", "allowed", tenant="prod", at=d(4))  # 15
    led.record_access("user:lea", "read", "model/m", "allowed", tenant="prod", at=d(4))  # 16
    led.record_connector_access("aws", "prod", "user:vic", "allowed", at=d(4, 1))  # 17
    led.deactivate_user("lea", at=d(5))  # 18
    led.record_access("user:lea", "delete", "model/m", "allowed", tenant="prod", at=d(6))  # 19
    with Warehouse.open(led, tmp_path / "w.duckdb") as warehouse:
        rows = findings(
            warehouse,
            "least-privilege",
            ["finding", "who", "what", "used_permissions", "positions"],
            at=d(20),
            window="30d",
        )
    assert [r for r in rows if r[0] == "dormant-principal"] == []
    assert [(r[1], r[2].split(" (")[0], r[3], r[4][-1]) for r in rows if r[0] == "smallest-role"] == [
        ("user:lea", "role viewer", ["model:read"], 16),
        ("user:vic", "role viewer", ["model:read"], 15),
    ]


def test_least_privilege_with_a_short_window_finds_everyone_dormant(wh):
    columns = ["finding", "who", "what", "since", "positions"]
    rows = findings(wh, "least-privilege", columns, at=d(20), window="10d")
    assert [r for r in rows if r[0] == "dormant-principal"] == [
        ("dormant-principal", "service_account:ci", "no recorded activity", d(1), [8]),
        # alice's last activity is the role change she made at d(7) (position 30), not her last use
        ("dormant-principal", "user:alice", "no activity in the window", d(7), [4, 30]),
        ("dormant-principal", "user:bob", "no activity in the window", d(4, 1), [5, 24]),
        ("dormant-principal", "user:carol", "no activity in the window", d(4), [6, 23]),
    ]
    assert not [r for r in rows if r[0] == "smallest-role"]


def test_secrets_marks_unauthorised_reads_and_denied_attempts(wh):
    columns = ["finding", "who", "where", "what", "since", "outcome", "authorised", "role", "positions"]
    assert findings(wh, "secrets", columns, start=d(1), end=d(20)) == [
        (
            "authorised",
            "user:carol",
            "tenant:prod",
            "read_secret_value service_connector/aws",
            d(4),
            "allowed",
            True,
            "admin",
            [23, 18],
        ),
        (
            "unauthorised-access",
            "user:bob",
            "tenant:prod",
            "read_secret_value service_connector/aws",
            d(4, 1),
            "allowed",
            False,
            None,
            [24],
        ),
        (
            "denied",
            "user:dave",
            "tenant:prod",
            "read_secret_value service_connector/aws",
            d(4, 2),
            "denied",
            False,
            None,
            [25],
        ),
    ]
    assert findings(wh, "secrets", ["who"], start=d(4, 1), end=d(4, 1)) == [("user:bob",)]


def test_secrets_names_the_first_path_and_every_role_and_event_behind_a_read_with_several(led):
    led.create_tenant("prod", at=d(1))  # 2
    led.create_user("erin", at=d(1))  # 3
    led.create_team("ops", at=d(1))  # 4
    led.add_team_member("ops", "user:erin", at=d(1))  # 5
    led.create_role("reader", "tenant", ["service_connector:read_secret_value"], at=d(1))  # 6
    led.assign_role("admin", "user:erin", tenant="prod", at=d(2))  # 7
    led.assign_role("reader", "team:ops", tenant="prod", at=d(2))  # 8
    led.register_connector("aws", "prod", at=d(2))  # 9
    led.record_connector_access("aws", "prod", "user:erin", "allowed", at=d(3))  # 10
    led.unassign_role("admin", "user:erin", tenant="prod", at=d(4))  # 11
    led.record_connector_access("aws", "prod", "user:erin", "allowed", at=d(5))  # 12
    with Warehouse.open(led, ":memory:") as warehouse:
        rows = findings(
            warehouse, "secrets", ["finding", "role", "via_team", "permission", "authorising_roles", "positions"]
        )
    assert rows == [
        # two paths: the first by its events' positions is named; both roles and all their events are listed
        ("authorised", "admin", None, "*:*", ["admin", "reader"], [10, 7, 8, 5]),
        ("authorised", "reader", "ops", "service_connector:read_secret_value", ["reader"], [12, 8, 5]),
    ]


def test_sod_with_the_default_rules(wh):
    columns = ["rule", "who", "where", "what", "since", "left_paths", "right_paths", "positions"]
    rows = findings(wh, "sod", columns, at=d(5))
    assert rows[0] == (
        "build-and-promote",
        "user:alice",
        "tenant:prod",
        "pipeline:create + model_version:promote",
        d(3),
        ["role ds via team:research (*:create)", "role ds via team:research (pipeline:create)"],
        ["role promoter (model_version:promote)"],
        [1, 11, 12, 13, 15, 16],
    )
    assert rows[1:] == [
        (
            "build-and-promote",
            "user:carol",
            "tenant:prod",
            "pipeline:create + model_version:promote",
            d(3),
            ["role admin (*:*)"],
            ["role admin (*:*)"],
            [1, 18],
        ),
        # an organization side (role:update) conflicts with a tenant side in that tenant
        (
            "define-roles-and-read-connector-secret",
            "user:carol",
            "tenant:prod",
            "role:update + service_connector:read_secret_value",
            d(3),
            ["role org_admin (role:*)"],
            ["role admin (*:*)"],
            [1, 18, 19],
        ),
        (
            "deploy-and-change-stacks",
            "user:carol",
            "tenant:prod",
            "pipeline_deployment:create + stack:update",
            d(3),
            ["role admin (*:*)"],
            ["role admin (*:*)"],
            [1, 18],
        ),
        (
            "manage-secrets-and-read-them",
            "user:carol",
            "tenant:prod",
            "secret:update + secret:read_secret_value",
            d(3),
            ["role admin (*:*)"],
            ["role admin (*:*)"],
            [1, 18],
        ),
        (
            "register-and-read-connector-secret",
            "user:carol",
            "tenant:prod",
            "service_connector:create + service_connector:read_secret_value",
            d(3),
            ["role admin (*:*)"],
            ["role admin (*:*)"],
            [1, 18],
        ),
    ]
    # once alice has left the team, she no longer builds pipelines
    assert [r[1] for r in findings(wh, "sod", columns, at=d(20)) if r[0] == "build-and-promote"] == ["user:carol"]


def test_sod_with_a_rules_file(wh, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nid = "read-and-promote"\nleft = "model:read"\nright = "model_version:promote"\n'
        '\n[[rule]]\nid = "org-and-members"\nleft = "member:update"\nright = "tenant:create"\n'
    )
    columns = ["rule", "who", "where", "what"]
    assert findings(wh, "sod", columns, at=d(5), rules=rules) == [
        ("org-and-members", "user:carol", "organization", "member:update + tenant:create"),
        ("read-and-promote", "user:alice", "tenant:prod", "model:read + model_version:promote"),
        ("read-and-promote", "user:carol", "tenant:prod", "model:read + model_version:promote"),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[rule]]\nid = 'x'\nleft = 'model:read'\n", "rule 1: right is required and must be text"),
        (
            "[[rule]]\nid = 'x'\nleft = 'model:*'\nright = 'model:read'\n",
            "left 'model:*' is not TYPE:ACTION (no wildcards",
        ),
        (
            "[[rule]]\nid = 'x'\nleft = 'modle:read'\nright = 'model:read'\n",
            "rule 'x': left 'modle:read': 'modle' is not a resource type of the zenml-pro preset",
        ),
        ("[[rule]]\nid = 'x'\nleft = 'model:read'\nright = 'model:read'\nseverity = 1\n", "unknown field 'severity'"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_a_bad_rules_file_is_refused_with_a_clear_message(wh, tmp_path, text, message):
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    with pytest.raises(RulesError, match=message.replace("*", r"\*").replace("(", r"\(")):
        run_audit(wh, "sod", rules=rules)


def test_changes_lists_losses_with_the_events_that_caused_them(wh):
    columns = ["finding", "who", "where", "what", "since", "events", "actors", "reasons", "positions"]
    assert findings(wh, "changes", columns, start=d(4), end=d(9)) == [
        ("lost", "user:alice", "tenant:prod", "*:create", d(8), ["TeamMemberRemoved"], ["system"], ["moved"], [31]),
        ("lost", "user:alice", "tenant:prod", "*:read", d(8), ["TeamMemberRemoved"], ["system"], ["moved"], [31]),
        ("lost", "user:alice", "tenant:prod", "*:share", d(8), ["TeamMemberRemoved"], ["system"], ["moved"], [31]),
        (
            "lost",
            "user:alice",
            "tenant:prod",
            "model:promote",
            d(7),
            ["RolePermissionsChanged"],
            ["user:alice"],
            ["SEC-9"],
            [30],
        ),
        (
            "lost",
            "user:alice",
            "tenant:prod",
            "pipeline:create",
            d(8),
            ["TeamMemberRemoved"],
            ["system"],
            ["moved"],
            [31],
        ),
    ]
    # an expiry has no event
    assert findings(wh, "changes", columns, start=d(9), end=d(12)) == [
        ("lost", "user:bob", "tenant:prod", "*:read", d(10), ["AssignmentExpired"], ["system"], [], []),
    ]


def test_changes_lists_gains_with_the_events_that_caused_them(wh):
    columns = ["finding", "who", "where", "what", "since", "events", "actors", "reasons", "positions"]
    rows = findings(wh, "changes", columns, start=d(2, 12), end=d(3))
    assert (
        "gained",
        "user:alice",
        "tenant:prod",
        "pipeline:create",
        d(3),
        ["RoleAssigned"],
        ["user:carol"],
        ["SEC-4"],
        [15],
    ) in rows
    assert (
        "gained",
        "user:carol",
        "organization",
        "role:*",
        d(3),
        ["RoleAssigned"],
        ["system"],
        ["bootstrap"],
        [19],
    ) in rows
    assert {r[1] for r in rows} == {"user:alice", "user:bob", "user:carol", "service_account:ci"}
    assert {r[0] for r in rows} == {"gained"}


def test_hygiene_finds_each_kind_of_problem(wh):
    columns = ["finding", "who", "where", "what", "since", "positions", "detail"]
    rows = findings(wh, "hygiene", columns, at=d(20), start=d(2), end=d(20))
    assert [r for r in rows if r[0] != "change-without-reason"] == [
        ("self-grant", "user:carol", "tenant:prod", "role admin", d(3), [18], "assigned role admin to user:carol"),
        (
            "self-grant",
            "user:alice",
            "tenant:prod",
            "role ds",
            d(7),
            [30, 15],
            "added model_version:promote to role ds, which they held",
        ),
        (
            "grant-to-deactivated",
            "user:dave",
            "tenant:dev",
            "role viewer",
            d(6),
            [29, 28],
            "holds role viewer (assigned 2026-01-06T01:00:00Z) but was deactivated",
        ),
        (
            "expired-not-revoked",
            "user:bob",
            "tenant:prod",
            "role viewer",
            d(10),
            [17],
            "role viewer expired and was never unassigned",
        ),
        ("role-without-holders", None, "organization", "role unused_role", d(2), [14], "never assigned"),
        ("role-without-holders", None, "organization", "role model_owner", d(9), [32], "never assigned"),
        ("role-without-holders", None, "organization", "role secret_reader", d(9), [33], "never assigned"),
        ("empty-team", "team:empty", "organization", "team:empty", d(1), [10], "never had members"),
        (
            "empty-team",
            "team:research",
            "organization",
            "team:research",
            d(8),
            [9, 31],
            "no members left; holds ds in tenant prod",
        ),
        ("admin-count", "", "tenant:dev", "0 administrators", d(1), [], "nobody has full control"),
        ("admin-count", "user:carol", "organization", "1 administrator", d(3), [19], None),
        ("admin-count", "user:carol", "tenant:prod", "1 administrator", d(3), [18], None),
    ]
    assert [r for r in rows if r[0] == "change-without-reason"] == [
        ("change-without-reason", "system", "organization", "TeamMemberAdded", d(2), [11], "user:alice team:research"),
        (
            "change-without-reason",
            "user:carol",
            "tenant:prod",
            "RoleAssigned",
            d(3),
            [17],
            "viewer user:bob tenant:prod",
        ),
        (
            "change-without-reason",
            "user:carol",
            "tenant:prod",
            "RoleAssigned",
            d(3),
            [18],
            "admin user:carol tenant:prod",
        ),
    ]


def test_every_audit_carries_its_sql_parameters_and_plain_description(wh):
    for name, audit in AUDITS.items():
        result = run_audit(wh, name, at=d(20)) if "at" in audit.uses else run_audit(wh, name, end=d(20))
        assert result.name == name and result.title and len(result.description) > 80
        assert set(result.sql) == set(audit.sql_files) and all(result.sql.values())
        json.dumps(result.params)  # plain values, for an evidence manifest
        assert result.columns[:1] and all(set(row) == set(result.columns) for row in result.rows)


def test_names_with_quotes_and_semicolons_flow_safely(led, tmp_path):
    name = "o'brien\"; DROP TABLE events; --"
    led.create_tenant("prod", at=d(1))
    led.create_user(name, at=d(1))
    led.create_role("r'; --", "tenant", ["model:read"], at=d(2), reason='it\'s "quoted"; really')
    led.assign_role("r'; --", f"user:{name}", tenant="prod", at=d(3), reason="x'); DELETE FROM events; --")
    with Warehouse.open(led, tmp_path / "w.duckdb") as wh:
        rows = run_audit(wh, "review", at=d(4), principal=f"user:{name}").rows
        assert [(r["who"], r["role"], r["grant_reason"]) for r in rows] == [
            (f"user:{name}", "r'; --", "x'); DELETE FROM events; --")
        ]
        assert wh.con.execute("SELECT count(*) FROM events").fetchall() == [(led.head(),)]


def test_bad_parameters_are_refused_with_one_clear_message(wh):
    with pytest.raises(UnknownAudit, match="no audit named 'everything'"):
        run_audit(wh, "everything")
    with pytest.raises(AuditParameterError, match="window: '90 days' is not a duration"):
        run_audit(wh, "least-privilege", window="90 days")
    with pytest.raises(AuditParameterError, match="has no time zone"):
        run_audit(wh, "review", at="2026-01-01T00:00:00")
    with pytest.raises(AuditParameterError, match="from: 2026-01-05T00:00:00Z is after to: 2026-01-04T00:00:00Z"):
        run_audit(wh, "changes", start=d(5), end=d(4))


def test_an_audit_syncs_the_warehouse_first(wh, led):
    assert run_audit(wh, "secrets", end=d(30)).table.num_rows == 3
    led.record_connector_access("aws", "prod", "user:alice", "allowed", at=d(21))
    assert run_audit(wh, "secrets", end=d(30)).rows[-1]["finding"] == "unauthorised-access"


# -- the changes audit agrees with the projection's diff ---------------------------------------------


@settings(
    max_examples=int(os.environ.get("WAREHOUSE_EXAMPLES", "60")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_changes_agree_with_the_projections_diff(tmp_path_factory, data):
    commands = data.draw(st.lists(COMMANDS, min_size=8, max_size=50))
    led = AccessLedger.open(str(tmp_path_factory.mktemp("ch") / "l.db"), create=True)
    prelude(led)
    build(led, commands)
    t1, t2 = sorted(data.draw(st.lists(st.sampled_from(instants_of(led)), min_size=2, max_size=2, unique=True)))
    timeline = Timeline(led, persist=False)
    between = list(led.read_changes(led.position_at(t1) + 1, led.position_at(t2)))
    expected = {
        (r["change"], r["principal"], r["tenant"], r["resource_scope"], r["permission"])
        for r in diff(timeline.at_time(t1), timeline.at_time(t2), t1, t2, between)
    }
    with Warehouse.open(led, ":memory:") as wh:
        got = {
            (r["finding"], r["who"], r["tenant"], r["resource_scope"], r["what"])
            for r in run_audit(wh, "changes", start=t1, end=t2).rows
        }
    assert got == expected
    led.close()


def test_hygiene_lists_live_tokens_of_deactivated_principals_and_admin_tokens(led, tmp_path):
    history(led)
    sha = "0" * 64

    def issue(token_id: str, principal: str, scopes: list[str], at: str, expires_at: str | None = None) -> int:
        event = {
            "type": "TokenIssued",
            "at": at,
            "actor": "user:carol",
            "token_id": token_id,
            "principal": principal,
            "scopes": scopes,
            "secret_sha256": sha,
            "reason": "T",
        }
        if expires_at:
            event["expires_at"] = expires_at
        return led.append(event)

    ci = issue("tok-ci", "service_account:ci", ["report", "read"], d(10))
    alice = issue("tok-alice", "user:alice", ["read", "admin"], d(10))
    issue("tok-bob", "user:bob", ["admin"], d(10))
    issue("tok-carol", "user:carol", ["read"], d(10), expires_at=d(12))
    expiring_admin = issue("tok-adm2", "user:alice", ["admin"], d(10), expires_at=d(15))
    led.append({"type": "TokenRevoked", "at": d(11), "actor": "user:carol", "token_id": "tok-bob", "reason": "T"})
    gone = led.deactivate_service_account("ci", at=d(12), reason="retired")
    led.deactivate_user("bob", at=d(12), reason="leaver")
    led.deactivate_user("carol", at=d(13), reason="leaver")
    columns = ["finding", "who", "where", "what", "since", "positions", "detail"]
    with Warehouse.open(led, tmp_path / "t.duckdb") as wh:

        def tokens(at: str) -> list[tuple]:
            return [
                r
                for r in findings(wh, "hygiene", columns, at=at, start=d(1), end=at)
                if r[0] in ("token-of-deactivated", "admin-token")
            ]

        assert tokens(d(14)) == [
            (
                "token-of-deactivated",
                "service_account:ci",
                "organization",
                "token tok-ci",
                d(12),
                [ci, gone],
                "token tok-ci (scopes report, read) is neither revoked nor expired but service_account:ci "
                "was deactivated",
            ),
            (
                "admin-token",
                "user:alice",
                "organization",
                "token tok-adm2",
                d(10),
                [expiring_admin],
                "token tok-adm2 has scope admin (scopes admin; expires 2026-01-15T00:00:00Z)",
            ),
            (
                "admin-token",
                "user:alice",
                "organization",
                "token tok-alice",
                d(10),
                [alice],
                "token tok-alice has scope admin (scopes read, admin; no expiry)",
            ),
        ]
        # Before its holder's deactivation the token is no finding; before its revocation bob's admin
        # token is one; once expired, tok-adm2 is none.
        assert [r[3] for r in tokens(d(10, 12))] == ["token tok-adm2", "token tok-alice", "token tok-bob"]
        assert [r[3] for r in tokens(d(16))] == ["token tok-ci", "token tok-alice"]
    from reports.findings import needs_attention

    assert needs_attention("hygiene", {"finding": "token-of-deactivated"})
    assert needs_attention("hygiene", {"finding": "admin-token"})


# -- every audit's rows in one order, whatever order the warehouse holds its rows in -------------------


def _audit_rows(wh: Warehouse, t1: str, t2: str) -> dict[str, list[dict]]:
    """Every audit's rows, in the order it gives them."""
    return {n: run_audit(wh, n, at=t2, start=t1, end=t2, sync=False).table.to_pylist() for n in AUDITS}


@settings(
    max_examples=int(os.environ.get("WAREHOUSE_EXAMPLES", "60")) // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_audit_orders_its_rows_totally(tmp_path_factory, data):
    """Rows equal on every ORDER BY key but different elsewhere come out in the order DuckDB's threads
    happen to produce them (so an export and its recompute differ): with every warehouse table's rows
    stored in reverse, every audit gives the same rows in the same order."""
    commands = data.draw(st.lists(COMMANDS, min_size=8, max_size=50))
    led = AccessLedger.open(str(tmp_path_factory.mktemp("order") / "l.db"), create=True)
    prelude(led)
    build(led, commands)
    t1, t2 = sorted(data.draw(st.lists(st.sampled_from(instants_of(led)), min_size=2, max_size=2, unique=True)))
    with Warehouse.open(led, ":memory:") as wh:
        wh.sync()
        before = _audit_rows(wh, t1, t2)
        for table in Warehouse.tables():
            wh.con.execute(f"CREATE TEMP TABLE reversed AS SELECT * FROM {table} ORDER BY rowid DESC")
            wh.con.execute(f"DELETE FROM {table}")
            wh.con.execute(f"INSERT INTO {table} SELECT * FROM reversed")
            wh.con.execute("DROP TABLE reversed")
        after = _audit_rows(wh, t1, t2)
    led.close()
    differ = [n for n in AUDITS if before[n] != after[n]]
    assert differ == [], {n: _first_difference(before[n], after[n]) for n in differ}


def _first_difference(a: list[dict], b: list[dict]) -> tuple:
    return next(((i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y), (len(a), len(b)))


def test_the_files_of_a_result_of_many_batches_keep_its_row_order(wh, tmp_path):
    """A result reaches the file writer as a stream of Arrow batches (2^17 rows each): the CSV and Parquet
    files of a result of several batches hold its rows in its order, every time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 5 * (1 << 17) + 17
    wh.con.register("many_batches", pa.table({"i": pa.array(range(n), pa.int64())}))
    try:
        for _ in range(2):
            wh.copy_to(
                "SELECT i, i::VARCHAR AS s FROM many_batches", str(tmp_path / "rows.csv"), "FORMAT csv, HEADER false"
            )
            assert (tmp_path / "rows.csv").read_text().split("\n")[:-1] == [f"{i},{i}" for i in range(n)]
            wh.copy_to("SELECT * FROM many_batches", str(tmp_path / "rows.parquet"), "FORMAT parquet")
            assert pq.read_table(tmp_path / "rows.parquet").column("i").to_pylist() == list(range(n))
    finally:
        wh.con.unregister("many_batches")
