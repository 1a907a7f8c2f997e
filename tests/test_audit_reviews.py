"""`audit reviews` (#18): each finding planted in a small history and found with its who and positions,
a clean campaign flagged for nothing, completion figures, and a forged population refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reviews import build, run

from ledger.app import AccessLedger
from ledger.timeutil import format_instant
from projections.pit import Timeline
from projections.reviews import campaign, derive, removals, start_event

T1 = datetime(2026, 2, 1, tzinfo=UTC)


def t(days: float = 0, seconds: float = 0) -> str:
    """An instant `days` and `seconds` after T1, as the ledger writes it."""
    return format_instant(T1 + timedelta(days=days, seconds=seconds))


def start(
    led: AccessLedger,
    name: str,
    tenants: list[str],
    reviewer: str,
    at: str,
    due: str | None = None,
    reviewers: tuple[str, ...] = ("team:research=user:dana",),
) -> dict[int, dict[str, Any]]:
    """Start a campaign at `at`; its items by number."""
    event, items = start_event(
        led, name, tenants, reviewer, list(reviewers), "user:erin", False, due, at, "system", None
    )
    first = led.append(event)
    return {r["item"]: {**r, "position": first} for r in items}


def decide(led: AccessLedger, name: str, *decisions: tuple[int, str, str, str]) -> list[int]:
    """Record (item, decision, reviewer, at) decisions as written (no CLI rule applied); their positions."""
    result = led.append_many(
        [
            {
                "type": "ReviewDecided",
                "at": at,
                "actor": who,
                "campaign": name,
                "item": item,
                "decision": d,
                "reviewer": who,
                "reason": "checked",
            }
            for item, d, who, at in decisions
        ]
    )
    return list(range(result.first, result.last + 1))


def close(led: AccessLedger, name: str, at: str, *, auto_revoke: bool = True, undecided: str = "exception") -> int:
    """Close at `at` (with the removals of its revocations, at the same instant); the close's position."""
    c = campaign(led, name)
    timeline = Timeline(led)
    removed = removals(c, derive(led, c, timeline), undecided, timeline.current(), "system") if auto_revoke else []
    event = {
        "type": "ReviewClosed",
        "at": at,
        "actor": "system",
        "campaign": name,
        "undecided": undecided,
        "auto_revoke": auto_revoke,
    }
    return led.append_many([event, *({**ev, "at": at} for ev in removed)]).first


def audit(url: str, tmp_path, *args: str) -> list[dict[str, Any]]:
    result = run(url, "audit", "reviews", "--format", "json", "--warehouse", str(tmp_path / "w.duckdb"), *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def findings(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Every row but completion as (finding, who, campaign, item numbers, positions)."""
    return [
        (r["finding"], r["who"], r["campaign"], r["item_numbers"], r["positions"])
        for r in rows
        if r["finding"] != "completion"
    ]


def test_a_ledger_without_campaigns_gives_no_rows(ledger_url, tmp_path):
    build(ledger_url)
    assert audit(ledger_url, tmp_path, "--at", t(1)) == []


def test_a_clean_campaign_is_flagged_for_nothing_and_its_completion_is_counted(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        items = start(led, "Q1", ["prod", "staging"], "user:carol", t(), due=t(30))
        decided = decide(
            led,
            "Q1",
            (1, "keep", "user:erin", t(1)),
            (2, "keep", "user:carol", t(1, 60)),
            (3, "revoke", "user:dana", t(2)),
            (4, "keep", "user:dana", t(2, 90)),
        )
        closed = close(led, "Q1", t(10))
    rows = audit(ledger_url, tmp_path, "--at", t(20))
    assert findings(rows) == []
    start_pos = items[1]["position"]
    completion = {r["reviewer"]: r for r in rows}
    assert set(completion) == {"user:carol", "user:dana", "user:erin"}
    dana = completion["user:dana"]
    assert (dana["finding"], dana["who"], dana["campaign"], dana["where"]) == (
        "completion",
        "user:dana",
        "Q1",
        "tenant:prod",
    )
    assert (dana["items"], dana["decided"], dana["open"], dana["kept"], dana["revoked"], dana["overdue"]) == (
        3,
        2,
        1,
        1,
        1,
        0,
    )
    assert dana["due"] == t(30) and dana["since"] == t()
    assert dana["positions"] == [start_pos, decided[2], decided[3], closed]
    assert [(r["items"], r["decided"]) for r in (completion["user:carol"], completion["user:erin"])] == [(1, 1), (1, 1)]
    assert [completion[w]["what"] for w in ("user:dana", "user:carol")] == ["3 items, 2 decided", "1 item, 1 decided"]


def test_a_reassigned_item_counts_for_its_new_reviewer(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        items = start(led, "Q1", ["prod", "staging"], "user:carol", t(), due=t(30))
        moved = next(
            n
            for n, r in items.items()
            if r["reviewer"] == "user:dana" and "user:carol" not in (r["principal"], r["granted_by"], r["added_by"])
        )
        led.append(
            {
                "type": "ReviewReassigned",
                "at": t(0, 30),
                "actor": "system",
                "campaign": "Q1",
                "items": [moved],
                "reviewer": "user:carol",
            }
        )
        decide(led, "Q1", (moved, "keep", "user:carol", t(1)))
    completion = {r["reviewer"]: r for r in audit(ledger_url, tmp_path, "--at", t(2))}
    dana = sum(r["reviewer"] == "user:dana" for r in items.values())
    assert (completion["user:carol"]["items"], completion["user:carol"]["decided"]) == (2, 1)
    assert completion["user:dana"]["items"] == dana - 1


def test_a_period_covers_campaigns_started_or_closed_in_it(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q1", ["prod"], "user:carol", t())
        close(led, "Q1", t(40))
    assert {r["campaign"] for r in audit(ledger_url, tmp_path, "--at", t(50), "--from", t(30), "--to", t(45))} == {"Q1"}
    assert audit(ledger_url, tmp_path, "--at", t(50), "--from", t(41), "--to", t(45)) == []


def test_overdue_items_late_or_never_decided(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        items = start(led, "Q1", ["prod", "staging"], "user:carol", t(), due=t(5))
        on_time = decide(led, "Q1", (3, "keep", "user:dana", t(4)))
        late = decide(led, "Q1", (4, "keep", "user:dana", t(6)))
    # Before the due nothing is overdue.
    assert findings(audit(ledger_url, tmp_path, "--at", t(4, 10))) == []
    rows = audit(ledger_url, tmp_path, "--at", t(7))
    start_pos = items[1]["position"]
    assert findings(rows) == [
        ("overdue-item", "user:carol", "Q1", [2], [start_pos]),
        ("overdue-item", "user:dana", "Q1", [4, 5], [start_pos, late[0]]),
        ("overdue-item", "user:erin", "Q1", [1], [start_pos]),
    ]
    dana = next(r for r in rows if r["finding"] == "overdue-item" and r["who"] == "user:dana")
    assert dana["detail"] == f"due {t(5)}; decided late: 4; never decided: 5 (still open at {t(7)})"
    assert on_time[0] not in dana["positions"]
    completion = next(r for r in rows if r["finding"] == "completion" and r["who"] == "user:dana")
    assert (completion["decided"], completion["open"], completion["overdue"]) == (2, 1, 2)


def _staff(led: AccessLedger, n: int) -> None:
    """n more users, each viewer in staging (granted by system at T1 - 1 day)."""
    for k in range(n):
        led.create_user(f"u{k:02}", at=t(-1))
        led.assign_role("viewer", f"user:u{k:02}", tenant="staging", at=t(-1))


def test_rubber_stamp_and_all_keep(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        _staff(led, 12)
        start(led, "fast", ["staging"], "user:erin", t())
        # 12 decisions, 2 seconds apart: every run of 10 spans 18 seconds.
        fast = decide(led, "fast", *((k, "keep", "user:erin", t(1, 2 * k)) for k in range(1, 13)))
        start(led, "slow", ["staging"], "user:dana", t(2))
        # 11 keeps a minute apart: no rubber stamp, but all kept.
        slow = decide(led, "slow", *((k, "keep", "user:dana", t(3, 60 * k)) for k in range(1, 12)))
        start(led, "mixed", ["staging"], "user:zed", t(4))
        # 10 decisions within 9 seconds, one of them a revoke: a rubber stamp, not all-keep.
        mixed = decide(led, "mixed", *((k, "revoke" if k == 5 else "keep", "user:zed", t(5, k)) for k in range(1, 11)))
    assert findings(audit(ledger_url, tmp_path, "--at", t(6))) == [
        ("rubber-stamp", "user:erin", "fast", list(range(1, 13)), fast),
        ("rubber-stamp", "user:zed", "mixed", list(range(1, 11)), mixed),
        ("all-keep", "user:erin", "fast", list(range(1, 13)), fast),
        ("all-keep", "user:dana", "slow", list(range(1, 12)), slow),
    ]


def test_nine_quick_decisions_are_no_rubber_stamp(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        _staff(led, 10)
        start(led, "Q", ["staging"], "user:erin", t())
        # 9 within a second, the tenth 31 seconds after the first.
        decide(
            led,
            "Q",
            *((k, "keep" if k < 10 else "revoke", "user:erin", t(1, k / 10 if k < 10 else 31)) for k in range(1, 11)),
        )
    assert findings(audit(ledger_url, tmp_path, "--at", t(2))) == []


@pytest.fixture
def staffed(ledger_url):
    """The base history and 12 staging viewers; a counter gives each hypothesis example its own day."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        _staff(led, 12)
    return ledger_url, iter(range(10**6))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    decisions=st.lists(
        st.tuples(st.integers(0, 8), st.sampled_from(["keep"] * 4 + ["revoke"])), min_size=1, max_size=12
    )
)
def test_rubber_stamp_and_all_keep_match_an_oracle(staffed, tmp_path, decisions):
    """Decisions `gap` seconds after the one before: flagged exactly when 10 consecutive ones span at most
    30 seconds (positions: every decision of such a run); all-keep exactly when 10 or more, all keep."""
    from reports.audits import run_audit
    from reports.warehouse import Warehouse

    url, examples = staffed
    day = next(examples)
    name = f"c{day}"
    seconds = [sum(gap for gap, _ in decisions[: k + 1]) for k in range(len(decisions))]
    with AccessLedger.open(url) as led:
        start(led, name, ["staging"], "user:erin", t(day))
        positions = decide(
            led,
            name,
            *((k + 1, d, "user:erin", t(day, 3600 + s)) for k, ((_, d), s) in enumerate(zip(decisions, seconds))),
        )
        with Warehouse.open(led, tmp_path / "w.duckdb") as wh:
            rows = [r for r in run_audit(wh, "reviews", at=t(day, 7200)).rows if r["campaign"] == name]
    stamped = sorted(
        {k for i in range(len(seconds) - 9) if seconds[i + 9] - seconds[i] <= 30 for k in range(i, i + 10)}
    )
    expected = []
    if stamped:
        expected.append(("rubber-stamp", "user:erin", name, [k + 1 for k in stamped], [positions[k] for k in stamped]))
    if len(decisions) >= 10 and all(d == "keep" for _, d in decisions):
        expected.append(("all-keep", "user:erin", name, list(range(1, len(decisions) + 1)), positions))
    assert findings(rows) == expected


def test_self_review_own_access_and_own_grant_but_not_a_teammate(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        items = start(led, "Q1", ["prod"], "user:carol", t())
        # carol decides her own viewer (5) and the grant she made to ci (1): self-reviews. She also keeps
        # bob's editor through team research, which she is in too: keeping bob's membership keeps none of
        # her own access, so it is no self-review. dana's decision of 4 is clean.
        own, grant, _ = decide(
            led,
            "Q1",
            (5, "keep", "user:carol", t(1)),
            (1, "revoke", "user:carol", t(1, 5)),
            (3, "keep", "user:carol", t(1, 9)),
        )
        decide(led, "Q1", (4, "keep", "user:dana", t(1, 70)))
        positions = {(g["role"], g["principal"]): p for p, g in led.read() if g["type"] == "RoleAssigned"}
    rows = audit(ledger_url, tmp_path, "--at", t(2))
    assert [(f, who, c, n) for f, who, c, n, _ in findings(rows)] == [
        ("self-review", "user:carol", "Q1", [5]),
        ("self-review", "user:carol", "Q1", [1]),
    ]
    by_item = {r["item_numbers"][0]: r for r in rows if r["finding"] == "self-review"}
    assert by_item[5]["positions"] == [own]
    assert by_item[1]["positions"] == sorted([positions[("viewer", "service_account:ci")], grant])
    assert by_item[5]["detail"] == "decided (keep) their own access"
    assert by_item[1]["detail"] == "decided (revoke) a grant they made"
    assert items[3]["principal"] == "user:bob" and items[3]["via"] == "research"


def test_revocation_not_carried_out_never_removed_and_removed_late(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q1", ["prod"], "user:carol", t(), due=t(10))
        ci, bob = decide(led, "Q1", (1, "revoke", "user:erin", t(1)), (3, "revoke", "user:dana", t(1, 5)))
        closed = close(led, "Q1", t(2), auto_revoke=False)
        # ci's viewer is removed before the due: carried out. bob leaves the team only after it.
        led.append(
            {
                "type": "RoleUnassigned",
                "at": t(3),
                "actor": "system",
                "role": "viewer",
                "principal": "service_account:ci",
                "tenant": "prod",
                "reason": "review Q1",
            }
        )
    # Before the due nothing is late.
    assert findings(audit(ledger_url, tmp_path, "--at", t(9))) == []
    rows = audit(ledger_url, tmp_path, "--at", t(11))
    assert findings(rows) == [("revocation-not-carried-out", "user:bob", "Q1", [3], [bob, closed])]
    assert rows[0]["detail"] == (
        "item 3 revoked, the campaign closed without auto-revoke; never removed: still in "
        f"force at {t(11)}, due {t(10)}"
    )
    assert rows[0]["reviewer"] == "user:dana" and rows[0]["where"] == "tenant:prod"
    with AccessLedger.open(ledger_url) as led:
        late = led.append(
            {
                "type": "TeamMemberRemoved",
                "at": t(12),
                "actor": "system",
                "team": "research",
                "member": "user:bob",
                "reason": "review Q1",
            }
        )
    rows = audit(ledger_url, tmp_path, "--at", t(13))
    assert findings(rows) == [("revocation-not-carried-out", "user:bob", "Q1", [3], [bob, closed, late])]
    assert f"removed late, at {t(12)} (position {late})" in rows[0]["detail"]
    assert ci < closed


def test_regranted_within_30_days_of_the_revocation(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q1", ["prod"], "user:carol", t())
        ci, bob = decide(led, "Q1", (1, "revoke", "user:erin", t(1)), (3, "revoke", "user:dana", t(1, 5)))
        closed = close(led, "Q1", t(2))
        # The close removed ci's viewer (closed + 1) and bob's membership of research (closed + 2).
        again = led.append(
            {
                "type": "TeamMemberAdded",
                "at": t(20),
                "actor": "user:alice",
                "team": "research",
                "member": "user:bob",
                "reason": "asked again",
            }
        )
        led.assign_role("viewer", "service_account:ci", tenant="prod", at=t(40))  # 38 days later: not flagged
    rows = audit(ledger_url, tmp_path, "--at", t(50))
    assert findings(rows) == [("regranted-after-revoke", "user:bob", "Q1", [3], [bob, closed + 2, again])]
    assert rows[0]["detail"] == (
        f"item 3 revoked, removed at {t(2)} (position {closed + 2}); added to team "
        f"research by user:alice at {t(20)} (position {again})"
    )
    assert ci < closed


def test_privileged_access_no_recent_campaign_reviewed(ledger_url, tmp_path):
    build(ledger_url)  # alice has been admin of prod since 2026-01-01
    with AccessLedger.open(ledger_url) as led:
        positions = {(g["role"], g["principal"]): p for p, g in led.read() if g["type"] == "RoleAssigned"}
        led.create_user("newcomer", at=t(60))
        led.assign_role("admin", "user:newcomer", tenant="prod", at=t(60))  # held for less than 90 days
    rows = audit(ledger_url, tmp_path, "--at", t(100))
    assert findings(rows) == [
        ("privileged-not-reviewed", "user:alice", None, None, [positions[("admin", "user:alice")]])
    ]
    assert (rows[0]["what"], rows[0]["where"], rows[0]["since"]) == (
        "admin in prod",
        "tenant:prod",
        "2026-01-01T00:00:00Z",
    )
    # A campaign closed in the 90 days before --at that had alice's admin role as an item covers it.
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q2", ["prod"], "user:carol", t(101))
        close(led, "Q2", t(102), undecided="keep")
    assert [r for r in audit(ledger_url, tmp_path, "--at", t(103)) if r["finding"] == "privileged-not-reviewed"] == []
    later = audit(ledger_url, tmp_path, "--at", t(193))
    assert [r["who"] for r in later if r["finding"] == "privileged-not-reviewed"] == ["user:alice", "user:newcomer"]


def test_campaigns_run_through_the_cli_are_audited(ledger_url, tmp_path):
    build(ledger_url)
    started = run(
        ledger_url,
        "review",
        "start",
        "Q3",
        "--tenant",
        "prod",
        "--reviewer",
        "user:carol",
        "--reviewer-for",
        "team:research=user:dana",
        "--fallback-reviewer",
        "user:erin",
    )
    assert started.exit_code == 0, started.output
    assert run(ledger_url, "review", "decide", "Q3", "3", "revoke", "--actor", "user:dana").exit_code == 0
    assert run(ledger_url, "review", "close", "Q3", "--leave-exceptions", "--actor", "system").exit_code == 0
    rows = audit(ledger_url, tmp_path)
    assert findings(rows) == []
    assert {r["reviewer"]: (r["items"], r["decided"], r["revoked"]) for r in rows} == {
        "user:carol": (1, 0, 0),
        "user:dana": (3, 1, 1),
        "user:erin": (1, 0, 0),
    }


def test_the_review_tables_never_enter_the_warehouse_file(ledger_url, tmp_path):
    from reports.audits import run_audit
    from reports.warehouse import Warehouse, foreign_objects

    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q1", ["prod"], "user:carol", t())
        with Warehouse.open(led, tmp_path / "w.duckdb") as wh:
            assert len(run_audit(wh, "reviews", at=t(1))) == 3
            assert foreign_objects(wh.con) == []
            # Registered for the query only: gone from the connection afterwards too.
            assert wh.con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name LIKE 'review_%'").fetchall() == [
                (0,)
            ]
    verify = run(ledger_url, "verify", "--warehouse", str(tmp_path / "w.duckdb"))
    assert verify.exit_code == 0, verify.output


def test_a_forged_population_is_refused_with_one_line(url_factory, tmp_path):
    from test_import_export import HISTORY, jsonl

    forged = [dict(e, population_sha256="0" * 64) if e["type"] == "ReviewStarted" else e for e in HISTORY]
    url = url_factory("forged")
    with AccessLedger.open(url, create=True) as led:
        led.import_lines(jsonl(forged))
    result = run(url, "audit", "reviews", "--warehouse", str(tmp_path / "w.duckdb"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: review campaign 'q1': the population re-derived at position 39 does not match "
        "its start event (count or SHA-256): run `access-ledger verify`\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--from", "2026-03-01", "--to", "2026-02-01"],
            "from: 2026-03-01T00:00:00Z is after to: 2026-02-01T00:00:00Z",
        ),
        (["--at", "yesterdayish"], None),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(ledger_url, tmp_path, args, message):
    build(ledger_url)
    result = run(ledger_url, "audit", "reviews", "--warehouse", str(tmp_path / "w.duckdb"), *args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    if message is not None:
        assert result.stderr == f"Error: {message}\n"
    assert not (tmp_path / "w.duckdb").exists()


def test_a_removal_before_the_revoke_decision_does_not_carry_it_out(ledger_url, tmp_path):
    """ci's viewer is removed and granted again before erin decides to revoke it; nobody removes it after:
    the revocation was never carried out (and nothing was re-granted after a revocation)."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q1", ["prod"], "user:carol", t(), due=t(10))
        led.unassign_role("viewer", "service_account:ci", tenant="prod", at=t(0, 60))
        led.assign_role("viewer", "service_account:ci", tenant="prod", at=t(0, 120))
        (ci,) = decide(led, "Q1", (1, "revoke", "user:erin", t(1)))
        closed = close(led, "Q1", t(2), auto_revoke=False)
    rows = audit(ledger_url, tmp_path, "--at", t(11))
    assert findings(rows) == [("revocation-not-carried-out", "service_account:ci", "Q1", [1], [ci, closed])]
    assert "never removed: still in force" in rows[0]["detail"]
    status = run(ledger_url, "review", "status", "Q1")
    assert "1 revocations not carried out" in status.stdout
    # A removal after the decision (here, after the due too) is what carries it out, late.
    with AccessLedger.open(ledger_url) as led:
        late = led.append(
            {
                "type": "RoleUnassigned",
                "at": t(12),
                "actor": "system",
                "role": "viewer",
                "principal": "service_account:ci",
                "tenant": "prod",
                "reason": "review Q1",
            }
        )
    rows = audit(ledger_url, tmp_path, "--at", t(13))
    assert findings(rows) == [("revocation-not-carried-out", "service_account:ci", "Q1", [1], [ci, closed, late])]
    assert f"removed late, at {t(12)} (position {late})" in rows[0]["detail"]


def test_access_already_gone_at_the_revoke_decision_is_carried_out(ledger_url, tmp_path):
    """carol's viewer is removed (and not granted again) before dana decides to revoke it: nothing is left to
    remove, so the revocation stands carried out by that removal, and its re-grant is judged from there."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q1", ["prod"], "user:carol", t(), due=t(10))
        gone = led.unassign_role("viewer", "user:carol", tenant="prod", at=t(0, 60))
        (carol,) = decide(led, "Q1", (5, "revoke", "user:dana", t(1)))
        close(led, "Q1", t(2), auto_revoke=False)
    assert findings(audit(ledger_url, tmp_path, "--at", t(11))) == []
    with AccessLedger.open(ledger_url) as led:
        again = led.assign_role("viewer", "user:carol", tenant="prod", at=t(12))
    rows = audit(ledger_url, tmp_path, "--at", t(13))
    assert findings(rows) == [("regranted-after-revoke", "user:carol", "Q1", [5], [gone, carol, again])]


def _batch_file(tmp_path, rows: list[tuple[int, str, str]]) -> str:
    path = tmp_path / f"batch{len(list(tmp_path.glob('batch*')))}.csv"
    path.write_text("item,decision,reason\n" + "".join(f"{n},{d},{why}\n" for n, d, why in rows))
    return str(path)


def test_a_considered_batch_is_no_rubber_stamp_and_is_recorded_as_one(ledger_url, tmp_path):
    """12 decisions from one file, days after the items were sent, mixed and each with its own reason: recorded
    at one instant as one batch (its id and the file's SHA-256 on each decision), and flagged for nothing."""
    import hashlib

    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        _staff(led, 12)
        start(led, "Q", ["staging"], "user:erin", t())
    path = _batch_file(
        tmp_path, [(k, "revoke" if k % 4 == 0 else "keep", f"checked u{k:02} with the lead") for k in range(1, 13)]
    )
    result = run(ledger_url, "review", "decide", "Q", "--batch", path, "--actor", "user:erin")
    assert result.exit_code == 0, result.output
    assert [f for f in findings(audit(ledger_url, tmp_path)) if f[0] in ("rubber-stamp", "all-keep")] == []
    with AccessLedger.open(ledger_url) as led:
        decided = [ev for _, ev in led.read_changes() if ev["type"] == "ReviewDecided"]
    assert len(decided) == 12
    assert len({ev["batch"] for ev in decided}) == 1
    assert {ev["batch_sha256"] for ev in decided} == {hashlib.sha256(open(path, "rb").read()).hexdigest()}


def test_a_batch_is_a_rubber_stamp_when_it_shows_one_and_says_which(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        _staff(led, 12)
        start(led, "Q", ["staging"], "user:erin", t())
    keeps = _batch_file(tmp_path, [(k, "keep", "ok") for k in range(1, 13)])
    assert run(ledger_url, "review", "decide", "Q", "--batch", keeps, "--actor", "user:erin").exit_code == 0
    # A campaign whose batch comes within seconds of its start: mixed decisions, reasons of their own.
    assert run(ledger_url, "review", "start", "R", "--tenant", "staging", "--reviewer", "user:dana").exit_code == 0
    quick = _batch_file(tmp_path, [(k, "revoke" if k % 3 == 0 else "keep", f"reason {k}") for k in range(1, 13)])
    assert run(ledger_url, "review", "decide", "R", "--batch", quick, "--actor", "user:dana").exit_code == 0
    rows = [r for r in audit(ledger_url, tmp_path) if r["finding"] == "rubber-stamp"]
    with AccessLedger.open(ledger_url) as led:
        batches = {
            ev["campaign"]: (ev["batch"], ev["batch_sha256"])
            for _, ev in led.read_changes()
            if ev["type"] == "ReviewDecided"
        }
    assert [(r["campaign"], r["who"], r["what"], r["item_numbers"]) for r in rows] == [
        ("Q", "user:erin", "a batch of 12 decisions", list(range(1, 13))),
        ("R", "user:dana", "a batch of 12 decisions", list(range(1, 13))),
    ]
    q, r = rows
    assert q["detail"].startswith(f"batch {batches['Q'][0]} (file SHA-256 {batches['Q'][1]}), 12 decisions recorded")
    assert q["detail"].endswith(": all keep; every reason identical")
    assert r["detail"].endswith(": 12 decided within 30 seconds of their items being sent")


def test_import_refuses_a_batch_that_is_not_one(ledger_url, tmp_path):
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        _staff(led, 3)
        start(led, "Q", ["staging"], "user:erin", t())
    batch, sha = "ab" * 16, "cd" * 32

    def line(item: int, **extra) -> str:
        return (
            json.dumps(
                {
                    "type": "ReviewDecided",
                    "at": t(1),
                    "actor": "user:erin",
                    "campaign": "Q",
                    "item": item,
                    "decision": "keep",
                    "reviewer": "user:erin",
                    **extra,
                }
            )
            + "\n"
        )

    for text, message in [
        (line(1, batch=batch), "line 1: line: batch and batch_sha256 go together: give both or neither"),
        (
            line(1, batch=batch, batch_sha256=sha) + line(2, batch=batch, batch_sha256="ef" * 32),
            f"line 2: batch: {batch} of review campaign 'Q' was recorded by user:erin from a file with "
            f"SHA-256 {sha}: each of its decisions must say the same",
        ),
    ]:
        path = tmp_path / "d.jsonl"
        path.write_text(text)
        before = run(ledger_url, "export").stdout
        result = run(ledger_url, "import", str(path))
        assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")
        assert run(ledger_url, "export").stdout == before
    path.write_text(line(1, batch=batch, batch_sha256=sha))
    assert run(ledger_url, "import", str(path)).exit_code == 0
    path.write_text(line(2, batch=batch, batch_sha256=sha))
    result = run(ledger_url, "import", str(path))
    assert result.stderr == (
        f"Error: line 1: batch: {batch} of review campaign 'Q' was recorded in an earlier "
        "write: a batch's decisions are recorded at once\n"
    )


def test_a_close_by_someone_with_own_items_open_is_a_finding(ledger_url, tmp_path):
    """carol starts and closes the campaign while her own access (items 4, 5) and an item she was to review (2)
    are undecided: a finding naming both; erin's close of another campaign, her items decided, is none."""
    build(ledger_url)
    started = run(
        ledger_url,
        "review",
        "start",
        "Q3",
        "--tenant",
        "prod",
        "--reviewer",
        "user:carol",
        "--reviewer-for",
        "team:research=user:dana",
        "--fallback-reviewer",
        "user:erin",
        "--actor",
        "user:carol",
    )
    assert started.exit_code == 0, started.output
    assert run(ledger_url, "review", "decide", "Q3", "3", "keep", "--actor", "user:dana").exit_code == 0
    closed = run(ledger_url, "review", "close", "Q3", "--leave-exceptions", "--actor", "user:carol")
    assert closed.exit_code == 0, closed.output
    with AccessLedger.open(ledger_url) as led:
        close_position = next(p for p, ev in led.read_changes() if ev["type"] == "ReviewClosed")
    rows = [r for r in audit(ledger_url, tmp_path) if r["finding"] == "closed-with-own-items-open"]
    assert [(r["who"], r["campaign"], r["item_numbers"], r["positions"]) for r in rows] == [
        ("user:carol", "Q3", [2, 4, 5], [close_position])
    ]
    assert rows[0]["detail"].endswith(
        "; about their own access: 4, 5; assigned to them: 2; undecided items left as exceptions"
    )


def test_a_recorded_close_by_someone_who_may_not_close_is_a_finding(ledger_url, tmp_path):
    """A history written otherwise (an import) holds a close by a reviewer: flagged; one by an org_admin is not."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q1", ["staging"], "user:carol", t())
        start(led, "Q2", ["staging"], "user:carol", t(1))
        led.assign_role("org_admin", "user:zed", at=t(2))
        dana = led.append(
            {
                "type": "ReviewClosed",
                "at": t(3),
                "actor": "user:dana",
                "campaign": "Q1",
                "undecided": "keep",
                "auto_revoke": True,
            }
        )
        led.append(
            {
                "type": "ReviewClosed",
                "at": t(3),
                "actor": "user:zed",
                "campaign": "Q2",
                "undecided": "keep",
                "auto_revoke": True,
            }
        )
    rows = [r for r in audit(ledger_url, tmp_path, "--at", t(4)) if r["finding"] == "unauthorised-close"]
    assert [(r["who"], r["campaign"], r["positions"], r["detail"]) for r in rows] == [
        (
            "user:dana",
            "Q1",
            [dana],
            "only the owner of review campaign 'Q1' (system) or a holder of member:update in "
            "the organization closes it, not user:dana",
        )
    ]


def test_privileged_not_reviewed_is_judged_at_the_periods_end_once_per_principal(ledger_url, tmp_path):
    """alice is admin of prod and of staging: one row for her, naming both. A period ending before the campaign
    that reviewed her is judged at its end (she was not reviewed then), whatever comes after it."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        positions = {(g["role"], g["principal"]): p for p, g in led.read() if g["type"] == "RoleAssigned"}
        staging = led.assign_role("admin", "user:alice", tenant="staging", at=t(-30))
        start(led, "Q2", ["prod", "staging"], "user:carol", t(101))
        close(led, "Q2", t(102), undecided="keep")
    period = ("--at", t(110), "--from", t(0), "--to", t(100))
    rows = [r for r in audit(ledger_url, tmp_path, *period) if r["finding"] == "privileged-not-reviewed"]
    assert [(r["who"], r["what"], r["where"], r["positions"]) for r in rows] == [
        (
            "user:alice",
            "admin in prod, admin in staging",
            "organization",
            sorted([positions[("admin", "user:alice")], staging]),
        )
    ]
    assert rows[0]["detail"] == (
        f"privileged since 2026-01-01T00:00:00Z; no campaign closed between {t(10)} and {t(100)} reviewed it"
    )
    assert [r for r in audit(ledger_url, tmp_path, "--at", t(110)) if r["finding"] == "privileged-not-reviewed"] == []
