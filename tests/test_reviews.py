"""Access review campaigns (#18): start, items, decide (every rule), batch, close, status, list, round trip."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from projections.pit import Timeline
from projections.reviews import (
    campaign,
    carried_out,
    decision_event,
    derive,
    population,
    population_sha256,
    removals,
    start_event,
)

runner = CliRunner()
T0 = "2026-01-01T00:00:00Z"


def run(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})


def head(url: str) -> tuple[int, str]:
    with AccessLedger.open(url) as led:
        return led.count(), led.store.head()[2]


def build(url: str) -> None:
    """Tenants prod, staging, dev; team research (bob, carol); five assignments in force in prod and
    staging (one granted by carol, one through the team, one of carol's own), one expired, one in dev."""
    with AccessLedger.open(url, create=True) as led:
        led.init("acme", at=T0)
        for t in ("prod", "staging", "dev"):
            led.create_tenant(t, at=T0)
        for u in ("carol", "dana", "erin", "alice", "bob", "zed"):
            led.create_user(u, at=T0)
        led.create_service_account("ci", at=T0)
        led.create_team("research", at=T0)
        led.add_team_member("research", "user:bob", at=T0)
        led.add_team_member("research", "user:carol", at=T0)
        led.assign_role("admin", "user:alice", tenant="prod", at=T0)
        led.assign_role("viewer", "service_account:ci", tenant="prod", actor="user:carol", at=T0)
        led.assign_role("editor", "team:research", tenant="prod", at=T0)
        led.assign_role("viewer", "user:carol", tenant="prod", at=T0)
        led.assign_role("viewer", "user:alice", tenant="staging", expires_at="2026-01-02T00:00:00Z", at=T0)
        led.assign_role("viewer", "user:zed", tenant="dev", at=T0)


@pytest.fixture
def reviewed(ledger_url):
    build(ledger_url)
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
        "--due",
        "+30d",
    )
    assert result.exit_code == 0, result.output
    assert "campaign 'Q3' with 5 items" in result.output
    return ledger_url


def refused(url: str, *args: str, message: str) -> None:
    """The command is refused with exactly `message`, exit 2, and nothing is written."""
    before = head(url)
    result = run(url, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {message}\n"
    assert head(url) == before


def items(url: str, *args: str) -> list[dict]:
    result = run(url, "review", "items", "Q3", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_population_is_the_assignments_in_force_in_scope(reviewed):
    rows = items(reviewed)
    assert [(r["item"], r["principal"], r["role"], r["tenant"], r["via"], r["reviewer"]) for r in rows] == [
        (1, "service_account:ci", "viewer", "prod", None, "user:erin"),  # granted by carol: to the fallback
        (2, "user:alice", "admin", "prod", None, "user:carol"),
        (3, "user:bob", "editor", "prod", "research", "user:dana"),
        (4, "user:carol", "editor", "prod", "research", "user:dana"),
        (5, "user:carol", "viewer", "prod", None, "user:dana"),  # carol's own, and carol is in research
    ]
    assert [r["privileged"] for r in rows] == [False, True, False, False, False]
    assert [r["principal_kind"] for r in rows] == ["service_account", "person", "person", "person", "person"]
    assert all(r["decision"] is None and r["outcome"] == "open" for r in rows)


def test_population_sha256_is_re_derivable_from_the_ledger(reviewed):
    with AccessLedger.open(reviewed) as led:
        c = campaign(led, "Q3")
        start = c.start
        state = Timeline(led, persist=False).at_position(start["as_of_position"])
        again = population(state, start["at"], start["tenants"], start["privileged_only"])
        assert start["as_of_position"] == c.start_position - 1
        assert start["items"] == len(again) == 5
        assert start["population_sha256"] == population_sha256(again)
        assert len(derive(led, c)) == 5


def test_reviewer_filter_and_open_filter(reviewed):
    assert [r["item"] for r in items(reviewed, "--reviewer", "user:dana")] == [3, 4, 5]
    assert run(reviewed, "review", "decide", "Q3", "3", "keep", "--actor", "user:dana").exit_code == 0
    assert [r["item"] for r in items(reviewed, "--open")] == [1, 2, 4, 5]
    result = run(reviewed, "review", "items", "Q3", "--format", "csv")
    assert result.exit_code == 0
    assert list(csv.DictReader(io.StringIO(result.output)))[2]["decision"] == "keep"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["1", "keep", "--actor", "user:carol"],
            "user:carol may not decide item 1 of review campaign 'Q3': it is a grant they made themselves "
            "(it goes to the fallback reviewer)",
        ),
        (
            ["5", "keep", "--actor", "user:carol"],
            "user:carol may not decide item 5 of review campaign 'Q3': it is about their own access "
            "(it goes to the fallback reviewer)",
        ),
        (
            ["1", "keep", "--actor", "user:dana"],
            "item 1 of review campaign 'Q3' is assigned to user:erin, not user:dana",
        ),
        (["2", "keep", "--actor", "user:carol"], "item 2 is privileged (admin in prod): keeping it needs a reason"),
        (["9", "revoke", "--actor", "user:dana"], "item 9 is not an item of review campaign 'Q3' (it has 5)"),
        (
            ["x", "revoke", "--actor", "user:dana"],
            "item 'x' is not an item of review campaign 'Q3' (items are numbers)",
        ),
    ],
)
def test_decide_refusals_are_one_line_and_write_nothing(reviewed, args, message):
    refused(reviewed, "review", "decide", "Q3", *args, message=message)


def test_decide_records_the_reviewer_and_reason_and_refuses_a_second_decision(reviewed):
    result = run(reviewed, "review", "decide", "Q3", "2", "keep", "--reason", "on call", "--actor", "user:carol")
    assert result.exit_code == 0, result.output
    row = items(reviewed)[1]
    assert (row["decision"], row["reason"], row["outcome"]) == ("keep", "on call", "keep")
    refused(
        reviewed,
        "review",
        "decide",
        "Q3",
        "2",
        "revoke",
        "--actor",
        "user:carol",
        message="item 2 of review campaign 'Q3' is already decided (keep)",
    )


def test_unknown_campaign_and_duplicate_name_are_refused(reviewed):
    refused(
        reviewed,
        "review",
        "decide",
        "Q4",
        "1",
        "keep",
        "--actor",
        "user:erin",
        message="unknown review campaign 'Q4' (campaigns: Q3)",
    )
    refused(
        reviewed,
        "review",
        "start",
        "Q3",
        "--tenant",
        "prod",
        "--reviewer",
        "user:erin",
        message="review campaign 'Q3' already exists",
    )
    refused(
        reviewed,
        "review",
        "start",
        "Q4",
        "--tenant",
        "prod",
        "--reviewer",
        "user:erin",
        "--reviewer-for",
        "research=user:dana",
        message="--reviewer-for: 'research=user:dana' is not team:NAME=PRINCIPAL",
    )


def test_start_without_a_reviewer_who_may_decide_every_item_is_refused(reviewed):
    refused(
        reviewed,
        "review",
        "start",
        "Q4",
        "--tenant",
        "prod",
        "--reviewer",
        "user:carol",
        message="item 1 (service_account:ci, viewer in prod) has no reviewer who may decide it: "
        "user:carol may not (it is a grant they made themselves); give --fallback-reviewer",
    )


def test_start_privileged_only_takes_only_privileged_items(reviewed):
    result = run(
        reviewed, "review", "start", "admins", "--tenant", "prod", "--reviewer", "user:dana", "--privileged-only"
    )
    assert result.exit_code == 0, result.output
    out = run(reviewed, "review", "items", "admins", "--format", "json")
    assert [(r["principal"], r["role"]) for r in json.loads(out.output)] == [("user:alice", "admin")]


def write_batch(tmp_path, text: str):
    path = tmp_path / "decisions.csv"
    path.write_text(text)
    return str(path)


def test_batch_records_every_decision_in_one_transaction(reviewed, tmp_path):
    path = write_batch(tmp_path, "item,decision,reason\n3,revoke,left the team\n4,keep,\n5,keep,needs prod\n")
    result = run(reviewed, "review", "decide", "Q3", "--batch", path, "--actor", "user:dana")
    assert result.exit_code == 0, result.output
    assert result.output == "recorded 3 decisions at positions 22-24\n"
    assert [r["decision"] for r in items(reviewed)[2:]] == ["revoke", "keep", "keep"]


def test_batch_with_one_refused_row_writes_nothing(reviewed, tmp_path):
    for text, message in [
        ("item,decision,reason\n3,revoke,left\n3,keep,\n", "line 3: item 3 is given twice"),
        (
            "3,revoke,left\n1,keep,fine\n",
            "line 2: item 1 of review campaign 'Q3' is assigned to user:erin, not user:dana",
        ),
        ("3,maybe,\n", "line 1: decision 'maybe' is not keep or revoke"),
    ]:
        path = write_batch(tmp_path, text)
        refused(reviewed, "review", "decide", "Q3", "--batch", path, "--actor", "user:dana", message=message)
    assert all(r["decision"] is None for r in items(reviewed))


def test_close_revokes_in_the_same_transaction_naming_campaign_and_item(reviewed, tmp_path):
    assert run(reviewed, "review", "decide", "Q3", "1", "revoke", "--actor", "user:erin").exit_code == 0
    assert run(reviewed, "review", "decide", "Q3", "3", "revoke", "--actor", "user:dana").exit_code == 0
    assert run(reviewed, "review", "decide", "Q3", "5", "keep", "--actor", "user:dana").exit_code == 0
    count, _ = head(reviewed)
    result = run(reviewed, "review", "close", "Q3", "--leave-exceptions", "--actor", "system")
    assert result.exit_code == 0, result.output
    with AccessLedger.open(reviewed) as led:
        events = [ev for _, ev in led.read(count + 1)]
        state = Timeline(led, persist=False).current()
        held = {(g["role"], g["principal"], g["tenant"]) for g in led.grants()}
    assert [ev["type"] for ev in events] == ["ReviewClosed", "RoleUnassigned", "TeamMemberRemoved"]
    assert len(events) == 3  # one write: the close and its removals, nothing between
    assert events[0]["undecided"] == "exception" and events[0]["auto_revoke"] is True
    assert events[1]["reason"] == "access review Q3 item 1: revoke"
    assert events[2]["reason"] == (
        "access review Q3 item 3: revoke (team membership removed: editor in prod via team research)"
    )
    assert ("viewer", "service_account:ci", "prod") not in held
    assert "user:bob" not in state.members["research"]
    assert not state.allows("user:bob", "read", "model/m", "prod", events[-1]["at"])
    assert state.allows("user:carol", "read", "model/m", "prod", events[-1]["at"])  # kept
    rows = items(reviewed)
    assert [r["outcome"] for r in rows] == ["revoke", "exception", "revoke", "exception", "keep"]
    assert [r["removed"] for r in rows] == [True, None, True, None, None]
    verify = run(reviewed, "verify")
    assert verify.exit_code == 0, verify.output
    # The audits' warehouse takes the review events in its sync like any other.
    warehouse = str(tmp_path / "w.duckdb")
    audit = run(reviewed, "audit", "hygiene", "--format", "json", "--warehouse", warehouse)
    assert audit.exit_code == 0, audit.output
    assert run(reviewed, "verify", "--warehouse", warehouse).exit_code == 0


def test_no_decision_after_close_and_no_second_close(reviewed):
    assert run(reviewed, "review", "close", "Q3", "--keep-undecided", "--actor", "system").exit_code == 0
    refused(
        reviewed,
        "review",
        "decide",
        "Q3",
        "3",
        "revoke",
        "--actor",
        "user:dana",
        message="review campaign 'Q3' is closed: no decision after close",
    )
    refused(reviewed, "review", "close", "Q3", "--actor", "system", message="review campaign 'Q3' is already closed")
    assert [r["outcome"] for r in items(reviewed)] == ["keep"] * 5


def test_close_refuses_both_undecided_options(reviewed):
    refused(
        reviewed,
        "review",
        "close",
        "Q3",
        "--revoke-undecided",
        "--keep-undecided",
        "--actor",
        "system",
        message="give one of --revoke-undecided, --keep-undecided, --leave-exceptions, not --revoke-undecided "
        "and --keep-undecided",
    )


def test_revoke_undecided_removes_every_undecided_item(reviewed):
    kept = run(reviewed, "review", "decide", "Q3", "2", "keep", "--reason", "sre", "--actor", "user:carol")
    assert kept.exit_code == 0, kept.output
    result = run(reviewed, "review", "close", "Q3", "--revoke-undecided", "--actor", "system")
    assert result.exit_code == 0, result.output
    with AccessLedger.open(reviewed) as led:
        held = {(g["role"], g["principal"]) for g in led.grants()}
        members = Timeline(led, persist=False).current().members["research"]
    assert held == {
        ("admin", "user:alice"),
        ("editor", "team:research"),
        ("viewer", "user:alice"),
        ("viewer", "user:zed"),
    }
    assert members == {}


def test_items_of_one_team_membership_are_decided_alike(ledger_url, tmp_path):
    """A revoke of a team item removes the membership, and every item it gives with it: a keep and a
    revoke of one membership are refused at decide (one at a time or in a batch) and at close."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        led.assign_role("viewer", "team:research", tenant="staging", at=T0)
    assert (
        run(
            ledger_url,
            "review",
            "start",
            "Q3",
            "--tenant",
            "prod",
            "--tenant",
            "staging",
            "--reviewer",
            "user:dana",
            "--fallback-reviewer",
            "user:erin",
        ).exit_code
        == 0
    )
    rows = items(ledger_url)
    bob = [r["item"] for r in rows if r["principal"] == "user:bob"]
    assert len(bob) == 2 and all(r["via"] == "research" for r in rows if r["principal"] == "user:bob")
    before = head(ledger_url)
    path = tmp_path / "mixed.csv"
    path.write_text(f"item,decision,reason\n{bob[0]},keep,on the team\n{bob[1]},revoke,not needed\n")
    batch = run(ledger_url, "review", "decide", "Q3", "--batch", str(path), "--actor", "user:dana")
    assert batch.exit_code == 2 and batch.stderr.count("\n") == 1, batch.output
    assert (
        f"line 3: item {bob[1]} and item {bob[0]} (decided keep) both come from user:bob's membership" in batch.stderr
    )
    assert head(ledger_url) == before
    assert run(ledger_url, "review", "decide", "Q3", str(bob[0]), "revoke", "--actor", "user:dana").exit_code == 0
    mixed = run(ledger_url, "review", "decide", "Q3", str(bob[1]), "keep", "--reason", "x", "--actor", "user:dana")
    assert mixed.exit_code == 2 and "decide them the same" in mixed.stderr
    # Closing with the other item undecided (an exception, or kept) would take it too: refused.
    before = head(ledger_url)
    for option in ("--leave-exceptions", "--keep-undecided"):
        refused = run(ledger_url, "review", "close", "Q3", option, "--actor", "system")
        assert refused.exit_code == 2 and f"item {bob[0]} is revoked and item {bob[1]}" in refused.stderr, option
        assert head(ledger_url) == before
    assert run(ledger_url, "review", "close", "Q3", "--revoke-undecided", "--actor", "system").exit_code == 0
    with AccessLedger.open(ledger_url) as led:
        assert "user:bob" not in Timeline(led, persist=False).current().members["research"]


def test_no_auto_revoke_leaves_revocations_open_until_recorded(reviewed):
    assert run(reviewed, "review", "decide", "Q3", "1", "revoke", "--actor", "user:erin").exit_code == 0
    count, _ = head(reviewed)
    closed = run(reviewed, "review", "close", "Q3", "--no-auto-revoke", "--leave-exceptions", "--actor", "system")
    assert closed.exit_code == 0, closed.output
    assert head(reviewed)[0] == count + 1  # the close alone
    status = run(reviewed, "review", "status", "Q3", "--format", "json")
    assert status.exit_code == 0, status.output
    assert {r["reviewer"]: r["revocations_open"] for r in json.loads(status.output)}["user:erin"] == 1
    assert items(reviewed)[0]["removed"] is False
    removal = run(reviewed, "role", "unassign", "viewer", "--from", "service_account:ci", "--tenant", "prod")
    assert removal.exit_code == 0, removal.output
    assert items(reviewed)[0]["removed"] is True
    listed = json.loads(run(reviewed, "review", "list", "--format", "json").output)
    assert listed[0]["revocations_open"] == 0 and listed[0]["status"] == "closed"


def test_status_and_list(reviewed):
    assert run(reviewed, "review", "decide", "Q3", "3", "revoke", "--actor", "user:dana").exit_code == 0
    status = run(reviewed, "review", "status", "Q3", "--format", "json")
    assert status.exit_code == 0, status.output
    per = {r["reviewer"]: (r["items"], r["decided"], r["open"]) for r in json.loads(status.output)}
    assert per == {"user:carol": (1, 0, 1), "user:dana": (3, 1, 2), "user:erin": (1, 0, 1)}
    listed = run(reviewed, "review", "list", "--format", "json")
    assert listed.exit_code == 0
    (row,) = json.loads(listed.output)
    assert (row["campaign"], row["status"], row["tenants"], row["items"], row["decided"]) == (
        "Q3",
        "open",
        "prod,staging",
        5,
        1,
    )


def test_export_import_round_trip_gives_the_same_chain(reviewed, url_factory, tmp_path):
    assert run(reviewed, "review", "decide", "Q3", "3", "revoke", "--actor", "user:dana").exit_code == 0
    path = write_batch(tmp_path, "item,decision,reason\n4,keep,on call\n5,keep,needs prod\n")
    assert run(reviewed, "review", "decide", "Q3", "--batch", path, "--actor", "user:dana").exit_code == 0
    assert run(reviewed, "review", "close", "Q3", "--leave-exceptions", "--actor", "system").exit_code == 0
    exported = run(reviewed, "export")
    assert exported.exit_code == 0
    assert '"type":"ReviewStarted"' in exported.output and '"type":"ReviewClosed"' in exported.output
    assert exported.output.count('"batch_sha256":') == 2  # the batch's two decisions
    path = tmp_path / "events.jsonl"
    path.write_text(exported.output)
    other = url_factory("copy")
    imported = run(other, "import", str(path))
    assert imported.exit_code == 0, imported.output
    assert head(other) == head(reviewed)
    assert run(other, "export").output == exported.output
    assert run(other, "verify").exit_code == 0
    assert items(other) == items(reviewed)


def test_import_refuses_a_decision_the_campaign_cannot_take(reviewed, tmp_path):
    from ledger.timeutil import format_instant, now

    line = {
        "type": "ReviewDecided",
        "at": format_instant(now()),
        "actor": "user:dana",
        "campaign": "Q3",
        "item": 6,
        "decision": "keep",
        "reviewer": "user:dana",
    }
    path = tmp_path / "late.jsonl"
    path.write_text(json.dumps(line) + "\n")
    refused(reviewed, "import", str(path), message="line 1: item: 6 is not an item of review campaign 'Q3' (it has 5)")


def test_an_imported_campaign_is_re_derived_and_a_wrong_population_hash_is_caught(url_factory, tmp_path):
    from test_import_export import HISTORY, jsonl

    url = url_factory("imported")
    with AccessLedger.open(url, create=True) as led:
        led.import_lines(jsonl(HISTORY))
    listed = run(url, "review", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert (row["campaign"], row["status"], row["items"], row["revoked"], row["revocations_open"]) == (
        "q1",
        "closed",
        2,
        1,
        0,
    )
    forged = [dict(e, population_sha256="0" * 64) if e["type"] == "ReviewStarted" else e for e in HISTORY]
    other = url_factory("forged")
    with AccessLedger.open(other, create=True) as led:
        led.import_lines(jsonl(forged))
    result = run(other, "review", "items", "q1")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: review campaign 'q1': the population re-derived at position 39 does not match "
        "its start event (count or SHA-256): run `access-ledger verify`\n"
    )


_examples = iter(range(10**6))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    choices=st.lists(st.sampled_from(["keep", "revoke", None]), min_size=5, max_size=5),
    undecided=st.sampled_from(["keep", "revoke", "exception"]),
)
def test_after_close_every_revoked_item_is_gone_and_every_other_is_unchanged(url_factory, choices, undecided):
    url = url_factory(f"p{next(_examples)}")
    build(url)
    with AccessLedger.open(url) as led:
        event, _ = start_event(
            led,
            "Q",
            ["prod", "staging"],
            "user:carol",
            ["team:research=user:dana"],
            "user:erin",
            False,
            None,
            None,
            "system",
            None,
        )
        led.append(event)
        c = campaign(led, "Q")
        population = derive(led, c)
        decisions = [
            decision_event(c, population, r["item"], d, "why", r["reviewer"])
            for r, d in zip(population, choices)
            if d is not None
        ]
        if decisions:
            led.append_many(decisions)
        c = campaign(led, "Q")
        close = {
            "type": "ReviewClosed",
            "at": None,
            "actor": "system",
            "campaign": "Q",
            "undecided": undecided,
            "auto_revoke": True,
        }
        led.append_many([close, *removals(c, population, undecided, Timeline(led).current(), "system")])
        after = Timeline(led, persist=False).current()
    for r, d in zip(population, choices):
        assert carried_out(r, after) == ((d or undecided) == "revoke"), (r, d, undecided)


def test_the_exported_review_sheet_imports_back_as_a_batch(reviewed, tmp_path):
    """`review items --format csv --out`, decisions filled in by a spreadsheet (UTF-8 BOM, CRLF, `Keep` and
    `REVOKE`), then `review decide --batch` of the same file: the other columns are ignored, empty rows skipped."""
    sheet = tmp_path / "items.csv"
    exported = run(
        reviewed, "review", "items", "Q3", "--reviewer", "user:dana", "--open", "--format", "csv", "--out", str(sheet)
    )
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(sheet.read_text(encoding="utf-8"))))
    assert [r["item"] for r in rows] == ["3", "4", "5"]
    rows[0]["decision"], rows[0]["reason"] = "REVOKE", "left the team"
    rows[2]["decision"], rows[2]["reason"] = "Keep", "needs prod"  # item 4 left empty: not decided by this file
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    sheet.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))
    result = run(reviewed, "review", "decide", "Q3", "--batch", str(sheet), "--actor", "user:dana")
    assert result.exit_code == 0, result.output
    decided = {r["item"]: (r["decision"], r["reason"]) for r in items(reviewed)}
    assert decided == {
        1: (None, None),
        2: (None, None),
        3: ("revoke", "left the team"),
        4: (None, None),
        5: ("keep", "needs prod"),
    }


def test_a_sheet_without_a_decision_column_or_with_a_bad_decision_is_refused(reviewed, tmp_path):
    for text, message in [
        ("item,principal,role\n3,user:bob,editor\n", "line 1: a sheet needs the columns item and decision"),
        (
            "\ufeffitem,principal,decision,reason\r\n3,user:bob,maybe,\r\n",
            "line 2: decision 'maybe' is not keep or revoke",
        ),
        ("item,decision,decision\n3,keep,revoke\n", "line 1: the column decision is given twice"),
        ("item,decision,reason\n", "no decisions in the file"),
    ]:
        path = write_batch(tmp_path, text)
        message = message if message.startswith("line") else f"{path}: {message}"
        refused(reviewed, "review", "decide", "Q3", "--batch", path, "--actor", "user:dana", message=message)


def test_only_the_owner_or_a_member_updater_closes_a_campaign(reviewed):
    """The owner here is `system` (who started it). A reviewer may not close it; a holder of member:update in
    the organization (org_admin) may."""
    refused(
        reviewed,
        "review",
        "close",
        "Q3",
        "--actor",
        "user:dana",
        message="only the owner of review campaign 'Q3' (system) or a holder of member:update in the "
        "organization closes it, not user:dana",
    )
    refused(
        reviewed,
        "review",
        "close",
        "Q3",
        "--leave-exceptions",
        "--actor",
        "user:alice",  # a tenant admin
        message="only the owner of review campaign 'Q3' (system) or a holder of member:update in the "
        "organization closes it, not user:alice",
    )
    assert run(reviewed, "role", "assign", "org_admin", "--to", "user:zed").exit_code == 0
    closed = run(reviewed, "review", "close", "Q3", "--leave-exceptions", "--actor", "user:zed")
    assert closed.exit_code == 0, closed.output
    with AccessLedger.open(reviewed) as led:
        (close,) = [ev for _, ev in led.read_changes() if ev["type"] == "ReviewClosed"]
    assert (close["actor"], close["undecided"]) == ("user:zed", "exception")


def test_close_with_undecided_items_needs_to_be_told_what_they_become(reviewed):
    refused(
        reviewed,
        "review",
        "close",
        "Q3",
        "--actor",
        "system",
        message="review campaign 'Q3' has 5 undecided items: close with --revoke-undecided, --keep-undecided "
        "or --leave-exceptions",
    )
    refused(
        reviewed,
        "review",
        "close",
        "Q3",
        "--keep-undecided",
        "--leave-exceptions",
        message="give one of --revoke-undecided, --keep-undecided, --leave-exceptions, not --keep-undecided "
        "and --leave-exceptions",
    )
    closed = run(reviewed, "review", "close", "Q3", "--leave-exceptions")
    assert closed.exit_code == 0, closed.output
    assert [r["outcome"] for r in items(reviewed)] == ["exception"] * 5


def test_a_campaign_with_every_item_decided_closes_without_an_option(ledger_url):
    build(ledger_url)
    assert run(ledger_url, "review", "start", "A", "--tenant", "staging", "--reviewer", "user:carol").exit_code == 0
    with AccessLedger.open(ledger_url) as led:
        assert campaign(led, "A").start["items"] == 0
    closed = run(ledger_url, "review", "close", "A")
    assert closed.exit_code == 0, closed.output


def test_start_names_a_fallback_that_may_not_decide_an_item_either(reviewed):
    refused(
        reviewed,
        "review",
        "start",
        "Q4",
        "--tenant",
        "prod",
        "--reviewer",
        "user:carol",
        "--fallback-reviewer",
        "user:carol",
        message="item 1 (service_account:ci, viewer in prod) has no reviewer who may decide it: "
        "user:carol may not (it is a grant they made themselves), nor may the fallback user:carol (it is a grant "
        "they made themselves): name another --fallback-reviewer",
    )
