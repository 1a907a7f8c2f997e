"""Access reviews (#18): the reviewer's context of each item, and reassignment by the campaign's owner."""

from __future__ import annotations

import json

import pytest
from test_reviews import build, head, items, refused, run

from ledger.app import AccessLedger

T = "2026-01-01T{:02d}:00:00Z"
#: admin (*:*) in prod breaks every rule with tenant sides; with org_admin (role:*), the one with an
#: organization side too.
ALICE = [
    "build-and-promote",
    "register-and-read-connector-secret",
    "define-roles-and-read-connector-secret",
    "deploy-and-change-stacks",
    "manage-secrets-and-read-them",
]


def build_with_use(url: str) -> None:
    """build()'s history, and: frank holds a role breaking build-and-promote in prod; zed holds viewer on
    model/m in prod only; alice is an org_admin too; uses by alice, ci, frank and zed, allowed and
    denied, in and out of scope."""
    build(url)
    with AccessLedger.open(url) as led:
        led.create_user("frank", at=T.format(1))
        led.create_role("builder", "tenant", ["pipeline:create", "model_version:promote"], at=T.format(1))
        led.assign_role("builder", "user:frank", tenant="prod", at=T.format(1))
        led.assign_role("viewer", "user:zed", tenant="prod", resource="model/m", at=T.format(1))
        led.assign_role("org_admin", "user:alice", at=T.format(1))  # role:update, held in the organization
        led.register_connector("aws", "prod", at=T.format(1))
        led.record_access("user:alice", "read", "pipeline/p", "allowed", "prod", at=T.format(2))
        led.record_access("user:zed", "read", "model/other", "allowed", "prod", at=T.format(2))
        led.record_access("user:zed", "read", "model/m", "allowed", "prod", at=T.format(3))
        led.record_access("user:alice", "read", "model/m", "allowed", "staging", at=T.format(4))
        led.record_connector_access("aws", "prod", "user:alice", "allowed", at=T.format(5))
        led.record_access("user:alice", "delete", "model/m", "denied", "prod", at=T.format(6))
        led.record_access("service_account:ci", "create", "pipeline/x", "allowed", "prod", at=T.format(7))
        led.record_access("service_account:ci", "read", "pipeline/x", "denied", "prod", at=T.format(7))
        led.record_access("user:frank", "create", "pipeline/x", "allowed", "prod", at=T.format(8))


@pytest.fixture
def started(ledger_url):
    build_with_use(ledger_url)
    result = run(
        ledger_url,
        "review",
        "start",
        "Q3",
        "--tenant",
        "prod",
        "--tenant",
        "staging",
        "--reviewer",
        "user:carol",
        "--reviewer-for",
        "team:research=user:dana",
        "--fallback-reviewer",
        "user:erin",
        "--actor",
        "user:erin",
    )
    assert result.exit_code == 0, result.output
    assert "campaign 'Q3' with 7 items" in result.output
    with AccessLedger.open(ledger_url) as led:  # uses after the start count for nothing
        led.record_access("user:zed", "read", "model/m", "allowed", "prod")
        led.record_access("service_account:ci", "read", "pipeline/x", "allowed", "prod")
    return ledger_url


def test_context_permissions_last_use_before_the_start_and_sod_conflicts(started):
    rows = {r["item"]: r for r in items(started)}
    assert [(r["principal"], r["role"], r["resource"]) for r in rows.values()] == [
        ("service_account:ci", "viewer", None),
        ("user:alice", "admin", None),
        ("user:bob", "editor", None),
        ("user:carol", "editor", None),
        ("user:carol", "viewer", None),
        ("user:frank", "builder", None),
        ("user:zed", "viewer", "model/m"),
    ]
    assert rows[6]["permissions"] == ["model_version:promote", "pipeline:create"]
    assert rows[2]["permissions"] == ["*:*"] and rows[7]["permissions"] == ["*:read"]
    # alice: the secret read in prod (the staging read and the denied delete come after or elsewhere)
    assert rows[2]["last_used"] == T.format(5)
    assert rows[6]["last_used"] == T.format(8)
    assert rows[7]["last_used"] == T.format(3)  # model/m only: not the read of model/other, not after the start
    assert rows[1]["last_used"] is None  # ci created (not a viewer's permission), its read was denied
    assert rows[3]["last_used"] is None
    assert rows[6]["sod_conflicts"] == ["build-and-promote"]
    assert rows[2]["sod_conflicts"] == ALICE
    assert rows[1]["sod_conflicts"] == [] and rows[7]["sod_conflicts"] == []
    assert [r["privileged"] for r in rows.values()] == [False, True, False, False, False, False, False]


def test_context_is_not_hashed_and_the_table_is_brief(started):
    with AccessLedger.open(started) as led:
        led.assign_role("builder", "user:alice", tenant="prod")  # after the start: changes no item's context
    assert items(started)[1]["sod_conflicts"] == ALICE
    table = run(started, "review", "items", "Q3")
    assert table.exit_code == 0, table.output
    assert "sod_conflicts" in table.output and "last_used" in table.output
    assert "permissions" not in table.output and "expires_at" not in table.output
    csv_out = run(started, "review", "items", "Q3", "--format", "csv")
    header = csv_out.output.splitlines()[0].split(",")
    assert {"permissions", "last_used", "sod_conflicts", "principal_kind", "deactivated", "expires_at"} <= set(header)


def test_reassign_then_only_the_new_reviewer_decides(started):
    result = run(
        started,
        "review",
        "reassign",
        "Q3",
        "2",
        "3",
        "--to",
        "user:frank",
        "--actor",
        "user:erin",
        "--reason",
        "carol and dana are on leave",
    )
    assert result.exit_code == 0, result.output
    assert result.output.endswith("2 items of campaign 'Q3' to user:frank\n")
    assert [r["item"] for r in items(started, "--reviewer", "user:frank")] == [2, 3]
    assert [r["item"] for r in items(started, "--reviewer", "user:dana")] == [4, 5]
    refused(
        started,
        "review",
        "decide",
        "Q3",
        "3",
        "keep",
        "--actor",
        "user:dana",
        message="item 3 of review campaign 'Q3' is assigned to user:frank, not user:dana",
    )
    decided = run(started, "review", "decide", "Q3", "3", "revoke", "--actor", "user:frank")
    assert decided.exit_code == 0, decided.output
    status = json.loads(run(started, "review", "status", "Q3", "--format", "json").output)
    assert {r["reviewer"]: (r["items"], r["decided"]) for r in status}["user:frank"] == (2, 1)
    # A later reassignment wins: item 2 goes back to carol.
    again = run(started, "review", "reassign", "Q3", "2", "--to", "user:carol", "--actor", "user:erin")
    assert again.exit_code == 0, again.output
    assert items(started)[1]["reviewer"] == "user:carol"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["2", "--to", "user:frank", "--actor", "user:carol"],
            "only the owner of review campaign 'Q3' (user:erin) reassigns its items, not user:carol",
        ),
        (
            ["99", "--to", "user:frank", "--actor", "user:erin"],
            "item 99 is not an item of review campaign 'Q3' (it has 7)",
        ),
        (
            ["x", "--to", "user:frank", "--actor", "user:erin"],
            "item 'x' is not an item of review campaign 'Q3' (items are numbers)",
        ),
        (["2", "2", "--to", "user:frank", "--actor", "user:erin"], "item 2 is given twice"),
        (
            ["6", "--to", "user:frank", "--actor", "user:erin"],
            "user:frank may not review item 6 of review campaign 'Q3': it is about their own access",
        ),
        (
            ["1", "--to", "user:carol", "--actor", "user:erin"],
            "user:carol may not review item 1 of review campaign 'Q3': it is a grant they made themselves",
        ),
        (
            ["2", "--to", "user:carol", "--actor", "user:erin"],
            "item 2 of review campaign 'Q3' is already assigned to user:carol",
        ),
        (["2", "--to", "user:nobody", "--actor", "user:erin"], "unknown user 'nobody'"),
        (
            ["2", "--to", "team:research", "--actor", "user:erin"],
            "reviewer: 'team:research' must be a user or a service account",
        ),
        (["2", "--to", "user:gone", "--actor", "user:erin"], "reviewer: user:gone is deactivated"),
        (
            ["2", "--to", "user:frank", "--actor", "user:erin", "--reason", "x" * 2001],
            "reason: longer than 2000 characters",
        ),
    ],
)
def test_reassign_refusals_are_one_line_and_write_nothing(started, args, message):
    with AccessLedger.open(started) as led:
        led.create_user("gone")
        led.deactivate_user("gone")
    refused(started, "review", "reassign", "Q3", *args, message=message)


def test_no_reassignment_of_a_decided_item_nor_after_close(started):
    assert run(started, "review", "decide", "Q3", "3", "keep", "--actor", "user:dana").exit_code == 0
    refused(
        started,
        "review",
        "reassign",
        "Q3",
        "2",
        "3",
        "--to",
        "user:frank",
        "--actor",
        "user:erin",
        message="item 3 of review campaign 'Q3' is already decided (keep)",
    )
    assert run(started, "review", "close", "Q3", "--leave-exceptions", "--actor", "system").exit_code == 0
    refused(
        started,
        "review",
        "reassign",
        "Q3",
        "2",
        "--to",
        "user:frank",
        "--actor",
        "user:erin",
        message="review campaign 'Q3' is closed: no reassignment after close",
    )


def _line(**fields) -> str:
    from ledger.timeutil import format_instant, now

    return (
        json.dumps(
            {
                "type": "ReviewReassigned",
                "at": format_instant(now()),
                "actor": "user:erin",
                "campaign": "Q3",
                "items": [2],
                "reviewer": "user:frank",
                **fields,
            }
        )
        + "\n"
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"actor": "user:carol"},
            "actor: only the owner of review campaign 'Q3' (user:erin) reassigns its items, not user:carol",
        ),
        ({"items": [8]}, "items: 8 is not an item of review campaign 'Q3' (it has 7)"),
        ({"items": [2, 2]}, "items: item 2 is given twice"),
        ({"items": [3]}, "items: item 3 of review campaign 'Q3' is already decided (keep)"),
        ({"items": []}, "items: List should have at least 1 item after validation, not 0"),
        ({"reviewer": "user:zed"}, "reviewer: user:zed is deactivated"),
        ({"reviewer": "team:research"}, "reviewer: 'team:research' must be a user or a service account"),
        ({"campaign": "Q4"}, "campaign: unknown review campaign 'Q4'"),
    ],
)
def test_import_refuses_a_reassignment_the_campaign_cannot_take(started, tmp_path, fields, message):
    assert run(started, "review", "decide", "Q3", "3", "keep", "--actor", "user:dana").exit_code == 0
    with AccessLedger.open(started) as led:
        led.deactivate_user("zed")
    path = tmp_path / "reassign.jsonl"
    path.write_text(_line(**fields))
    refused(started, "import", str(path), message=f"line 1: {message}")


def test_import_refuses_a_reassignment_after_close(started, tmp_path):
    assert run(started, "review", "close", "Q3", "--leave-exceptions", "--actor", "system").exit_code == 0
    path = tmp_path / "reassign.jsonl"
    path.write_text(_line())
    refused(
        started,
        "import",
        str(path),
        message="line 1: campaign: review campaign 'Q3' is closed: no reassignment after close",
    )


def test_export_import_round_trip_with_a_reassignment(started, url_factory, tmp_path):
    assert (
        run(
            started,
            "review",
            "reassign",
            "Q3",
            "3",
            "4",
            "--to",
            "user:frank",
            "--actor",
            "user:erin",
            "--reason",
            "dana is on leave",
        ).exit_code
        == 0
    )
    assert run(started, "review", "decide", "Q3", "3", "revoke", "--actor", "user:frank").exit_code == 0
    assert run(started, "review", "close", "Q3", "--leave-exceptions", "--actor", "system").exit_code == 0
    exported = run(started, "export")
    assert exported.exit_code == 0
    assert (
        '"type":"ReviewReassigned","at":' in exported.output
        and '"campaign":"Q3","items":[3,4],"reviewer":"user:frank","reason":"dana is on leave"' in exported.output
    )
    path = tmp_path / "events.jsonl"
    path.write_text(exported.output)
    other = url_factory("copy")
    imported = run(other, "import", str(path))
    assert imported.exit_code == 0, imported.output
    assert head(other) == head(started)
    assert run(other, "export").output == exported.output
    assert run(other, "verify").exit_code == 0
    copied = items(other)
    assert copied == items(started)
    assert [(r["item"], r["reviewer"], r["outcome"]) for r in copied if r["reviewer"] == "user:frank"] == [
        (3, "user:frank", "revoke"),
        (4, "user:frank", "exception"),
    ]
    # The audits' warehouse takes the new event type in its sync like any other.
    warehouse = str(tmp_path / "w.duckdb")
    audit = run(other, "audit", "hygiene", "--format", "json", "--warehouse", warehouse)
    assert audit.exit_code == 0, audit.output
    assert run(other, "verify", "--warehouse", warehouse).exit_code == 0
