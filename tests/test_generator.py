"""The history generator: canonical, ordered, deterministic, clean except for what it plants."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from itertools import takewhile

import orjson
import pytest

from access_ledger.demo.generator import INCIDENT_AUDITS, SMALL, generate, is_generated
from ledger.app import AccessLedger
from ledger.events import encode, parse_json
from projections.permissions import PermissionState
from projections.reviews import carried_out, population, population_sha256, route

END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POPULATION = dict(events=30_000, users=300, tenants=12, roles=30, assignments=2_500)


@pytest.fixture(scope="module")
def small_lines() -> tuple[list[bytes], object]:
    scenario = generate("small", END)
    return list(scenario.lines()), scenario


@pytest.fixture(scope="module")
def population_lines() -> tuple[list[bytes], object]:
    scenario = generate("large", END, **POPULATION)
    return list(scenario.lines()), scenario


def test_lines_are_canonical_in_time_order_and_before_the_end(small_lines):
    lines, scenario = small_lines
    assert len(lines) == pytest.approx(SMALL.events, rel=0.05)
    stamps = []
    for line in lines:
        assert encode(parse_json(line)) == line  # exactly what the ledger stores
        stamps.append(orjson.loads(line)["at"])
    assert stamps == sorted(stamps)
    assert stamps[-1] < "2026-03-01T12:00:00Z"
    assert stamps[0] > "2025-02-28"
    assert is_generated(orjson.loads(lines[0]))


def test_same_seed_and_end_give_the_same_bytes(small_lines):
    lines, _ = small_lines
    assert list(generate("small", END).lines()) == lines
    assert list(generate("small", END, seed=7).lines()) != lines


def test_every_allowed_use_is_authorised_except_the_planted_read(small_lines, population_lines):
    for lines, scenario in (small_lines, population_lines):
        state = PermissionState()
        wrong = []
        for position, line in enumerate(lines, 1):
            ev = orjson.loads(line)
            if ev["type"] == "ConnectorSecretAccessed":
                allowed = state.allows(
                    ev["principal"], "read_secret_value", f"service_connector/{ev['connector']}", ev["tenant"], ev["at"]
                )
            elif ev["type"] == "ResourceAccessed":
                allowed = state.allows(ev["principal"], ev["action"], ev["resource"], ev.get("tenant"), ev["at"])
            else:
                state.apply(position, ev)
                continue
            if allowed != (ev["outcome"] == "allowed"):
                wrong.append(position)
        planted = [i.position for i in scenario.incidents if i.kind == "unauthorised-secret-read"]
        assert wrong == planted


def test_incidents_name_their_events_by_position(small_lines, population_lines):
    for lines, scenario in (small_lines, population_lines):
        assert Counter(i.kind for i in scenario.incidents) == Counter(set(INCIDENT_AUDITS))
        for incident in scenario.incidents:
            ev = orjson.loads(lines[incident.position - 1])
            assert ev["id"] == incident.event_id and ev["at"] == incident.at
            assert incident.audit == INCIDENT_AUDITS[incident.kind]
        by_kind = scenario.incidents_by_kind()
        assert orjson.loads(lines[by_kind["change-without-reason"][0].position - 1]).get("reason") is None
        grant = orjson.loads(lines[by_kind["self-grant"][0].position - 1])
        assert grant["actor"] == grant["principal"]


def test_population_has_the_shape_asked_for(population_lines):
    lines, scenario = population_lines
    counts = scenario.counts
    assert len(lines) == pytest.approx(POPULATION["events"], rel=0.1)
    assert counts["UserCreated"] == pytest.approx(POPULATION["users"], abs=3)
    assert counts["TenantCreated"] == POPULATION["tenants"]
    assert counts["RoleCreated"] == POPULATION["roles"]
    assert counts["RoleAssigned"] == pytest.approx(POPULATION["assignments"], rel=0.15)
    assert counts["ResourceAccessed"] + counts["ConnectorSecretAccessed"] > 0.8 * len(lines)


def test_population_imports_and_its_audits_find_exactly_the_planted(tmp_path, population_lines):
    from access_ledger.cli.demo import LEAVER_FINDINGS
    from reports.audits import AUDITS, run_audit
    from reports.evidence import needs_attention
    from reports.leavers import run_leavers
    from reports.warehouse import Warehouse

    lines, scenario = population_lines
    hr = tmp_path / "terminations.csv"
    hr.write_text(scenario.terminations_csv())
    with AccessLedger.open(str(tmp_path / "p.db"), create=True) as led:
        assert led.import_lines(lines).written == len(lines)
        with Warehouse.open(led) as wh:
            wh.sync()
            results = {name: run_audit(wh, name, at="2026-03-01T12:00:00Z", sync=False).rows for name in AUDITS}
            results["leavers"] = run_leavers(wh, str(hr), sla="24h", at="2026-03-01T12:00:00Z").rows

    def attention(name, row):
        return row.get("finding") in LEAVER_FINDINGS if name == "leavers" else needs_attention(name, row)

    def shows(row, incident):
        return row.get("who") == incident.principal or incident.position in (row.get("positions") or [])

    for incident in scenario.incidents:
        assert any(attention(incident.audit, r) and shows(r, incident) for r in results[incident.audit]), incident
    for name, rows in results.items():
        for row in rows:
            if attention(name, row):
                assert any(shows(row, i) for i in scenario.incidents), (name, row)


@pytest.mark.parametrize("end_hour", [12, 23])
def test_every_time_bound_grant_that_expired_was_revoked_except_the_planted(end_hour):
    """Grants expiring on the day the history ends (before its change window) must not be left behind:
    they would be findings nobody planted."""
    end = datetime(2026, 3, 1, end_hour, 0, tzinfo=UTC)
    scenario = generate("large", end, **{**POPULATION, "events": 40_000, "assignments": 10_000})
    held: dict[tuple, str] = {}
    for line in scenario.lines():
        ev = orjson.loads(line)
        key = (ev.get("role"), ev.get("principal"), ev.get("tenant"), ev.get("resource"))
        if ev["type"] == "RoleAssigned" and ev.get("expires_at"):
            held[key] = ev["expires_at"]
        elif ev["type"] == "RoleUnassigned":
            held.pop(key, None)
    # The demo audits at the end (now): anything expired by then must have been revoked.
    left = {k for k, expires in held.items() if expires <= end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    planted = {
        (i.role, i.principal, i.tenant, None) for i in scenario.incidents if i.kind == "expired-grant-not-revoked"
    }
    assert left == planted
    assert planted


def _campaigns(lines: list[bytes]) -> tuple[dict[str, dict], PermissionState]:
    """Replay the log as the ledger does: each campaign's population at its start position (checked
    against the start event), its decisions and close; and the state at the end."""
    state = PermissionState()
    found: dict[str, dict] = {}
    for position, line in enumerate(lines, 1):
        ev = orjson.loads(line)
        if ev["type"] == "ReviewStarted":
            assert ev["as_of_position"] == position - 1
            items = population(state, ev["at"], ev["tenants"], ev["privileged_only"])
            assert (len(items), population_sha256(items)) == (ev["items"], ev["population_sha256"]), ev["campaign"]
            route(items, state, ev["reviewer"], ev["reviewers"], ev.get("fallback_reviewer"))
            found[ev["campaign"]] = {"start": ev, "items": items, "decisions": [], "close": None}
        elif ev["type"] == "ReviewDecided":
            c = found[ev["campaign"]]
            assert c["close"] is None and ev["at"] < c["start"]["due"]
            assert c["items"][ev["item"] - 1]["reviewer"] == ev["reviewer"]
            c["decisions"].append((position, ev))
        elif ev["type"] == "ReviewClosed":
            found[ev["campaign"]]["close"] = (position, ev)
        state.apply(position, ev)
    return found, state


def test_campaigns_re_derive_and_are_decided_as_planted(small_lines, population_lines):
    """Two campaigns whose populations the ledger re-derives; every item decided before the due date by
    its reviewer; one reviewer rubber-stamps (10 decisions within 30 s), everyone else works at a
    person's pace and revokes something."""
    for lines, scenario in (small_lines, population_lines):
        campaigns, _ = _campaigns(lines)
        assert sorted(campaigns) == ["Q3-production", "Q4-all-tenants"]
        stamp = scenario.incidents_by_kind()["rubber-stamp-review"][0]
        hurried = set()
        for name, c in campaigns.items():
            assert c["close"] is not None and c["close"][1]["at"] < c["start"]["due"]
            assert sorted(ev["item"] for _, ev in c["decisions"]) == list(range(1, c["start"]["items"] + 1))
            per: dict[str, list] = {}
            for _, ev in c["decisions"]:
                per.setdefault(ev["reviewer"], []).append(ev)
            for reviewer, evs in per.items():
                times = [datetime.fromisoformat(ev["at"]) for ev in evs]
                if any((times[k + 9] - times[k]).total_seconds() <= 30 for k in range(len(times) - 9)):
                    hurried.add((name, reviewer))
                elif len(evs) >= 10:
                    assert any(ev["decision"] == "revoke" for ev in evs), (name, reviewer)
        assert hurried == {("Q3-production", stamp.principal)}
        assert orjson.loads(lines[stamp.position - 1])["reviewer"] == stamp.principal


def test_revocations_are_carried_out_but_the_planted_one_and_never_re_granted(small_lines, population_lines):
    for lines, scenario in (small_lines, population_lines):
        campaigns, _ = _campaigns(lines)
        undone = scenario.incidents_by_kind()["revocation-not-carried-out"][0]
        assert orjson.loads(lines[undone.position - 1])["decision"] == "revoke"
        events = [orjson.loads(line) for line in lines]
        left = set()
        for c in campaigns.values():
            revoked = [c["items"][ev["item"] - 1] for _, ev in c["decisions"] if ev["decision"] == "revoke"]
            due = c["start"]["due"]
            at_due = PermissionState().fold(takewhile(lambda p, due=due: p[1]["at"] <= due, enumerate(events, 1)))
            left |= {r["principal"] for r in revoked if not carried_out(r, at_due)}
        assert left == {undone.principal}
        # Removed by the review, or by anyone after a review decided to revoke it (that carries it out too).
        decided = {
            (r["role"], r["principal"], r["tenant"], r["resource"]): ev["at"]
            for c in campaigns.values()
            for _, ev in c["decisions"]
            if ev["decision"] == "revoke"
            for r in [c["items"][ev["item"] - 1]]
            if r["via"] is None
        }
        removed: dict[tuple, str] = {}
        for ev in events:
            key = (ev.get("role"), ev.get("principal"), ev.get("tenant"), ev.get("resource"))
            if ev["type"] == "RoleUnassigned" and (
                ev.get("reason", "").startswith("access review ") or ev["at"] >= decided.get(key, "9")
            ):
                removed[key] = ev["at"]
            elif ev["type"] == "RoleAssigned" and key in removed:
                assert (datetime.fromisoformat(ev["at"]) - datetime.fromisoformat(removed[key])).days > 30, key
        assert removed


def test_leavers_are_deactivated_within_a_day_but_the_late_one_and_use_nothing_after(small_lines, population_lines):
    for lines, scenario in (small_lines, population_lines):
        terminated = dict(scenario.terminations)
        assert len(terminated) >= 3
        assert scenario.terminations_csv().splitlines()[0] == "person,terminated_at"
        late = scenario.incidents_by_kind()["late-leaver"][0]
        deactivated: dict[str, tuple[int, str]] = {}
        for position, line in enumerate(lines, 1):
            ev = orjson.loads(line)
            who = ev.get("principal") if ev["type"] in ("ResourceAccessed", "ConnectorSecretAccessed") else None
            if who in terminated:
                assert ev["at"] < terminated[who], (who, ev)
            if ev["type"] == "UserDeactivated" and f"user:{ev['user']}" in terminated:
                deactivated.setdefault(f"user:{ev['user']}", (position, ev["at"]))
        assert set(deactivated) == set(terminated)
        slow = {
            p
            for p, (_, at) in deactivated.items()
            if (datetime.fromisoformat(at) - datetime.fromisoformat(terminated[p])).total_seconds() > 86_400
        }
        assert slow == {late.principal}
        assert deactivated[late.principal][0] == late.position


def test_every_privileged_access_older_than_90_days_was_reviewed_in_the_last_90(small_lines, population_lines):
    """What `audit reviews` checks at the end of the history (privileged-not-reviewed)."""
    end = "2026-03-01T12:00:00Z"
    window = "2025-12-01T12:00:00Z"  # 90 days before the end
    for lines, _ in (small_lines, population_lines):
        campaigns, state = _campaigns(lines)
        reviewed = {
            (r["principal"], r["role"], r["tenant"], r["resource"])
            for c in campaigns.values()
            if window <= c["close"][1]["at"] <= end
            for r in c["items"]
        }
        held = population(state, end, sorted(t for t, live in state.tenants.items() if live), True)

        def since(r, state=state):  # held directly, or through a team since the later of the grant and the membership
            holder = f"team:{r['via']}" if r["via"] else r["principal"]
            granted = state.assignments[(r["role"], holder, r["tenant"], r["resource"])].source.at
            return max(granted, state.members[r["via"]][r["principal"]].at) if r["via"] else granted

        old = [r for r in held if since(r) < window]
        assert old
        assert [r for r in old if (r["principal"], r["role"], r["tenant"], r["resource"]) not in reviewed] == []


def test_every_change_is_authorised_but_the_two_planted(small_lines, population_lines):
    from test_authority import Oracle

    for lines, scenario in (small_lines, population_lines):
        oracle, forbidden = Oracle(), {}
        for position, line in enumerate(lines, 1):
            ev = orjson.loads(line)
            verdict = oracle.judge(ev)
            if verdict is not None:
                forbidden[position] = verdict[0]
            oracle.apply(ev)
        planted = {i.position: i for i in scenario.incidents if i.audit == "authority"}
        assert sorted(i.kind for i in planted.values()) == ["change-by-leaver", "unauthorised-change"]
        assert forbidden == {
            p: "change-by-inactive-actor" if i.kind == "change-by-leaver" else "unauthorised-change"
            for p, i in planted.items()
        }
