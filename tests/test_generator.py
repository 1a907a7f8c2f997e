"""The history generator: canonical, ordered, deterministic, clean except for what it plants."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from ledger.app import AccessLedger
from ledger.events import encode, parse_json
from ledger.generator import INCIDENT_AUDITS, SMALL, generate, is_generated
from projections.permissions import PermissionState

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
                allowed = state.allows(ev["principal"], "read_secret_value", f"service_connector/{ev['connector']}",
                                       ev["tenant"], ev["at"])
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
    from reports.audits import AUDITS, run_audit
    from reports.evidence import needs_attention
    from reports.warehouse import Warehouse

    lines, scenario = population_lines
    with AccessLedger.open(str(tmp_path / "p.db"), create=True) as led:
        assert led.import_lines(lines).written == len(lines)
        with Warehouse.open(led) as wh:
            wh.sync()
            results = {name: run_audit(wh, name, at="2026-03-01T12:00:00Z", sync=False).rows for name in AUDITS}

    def shows(row, incident):
        return row.get("who") == incident.principal or incident.position in (row.get("positions") or [])
    for incident in scenario.incidents:
        assert any(needs_attention(incident.audit, r) and shows(r, incident) for r in results[incident.audit]), \
            incident
    for name, rows in results.items():
        for row in rows:
            if needs_attention(name, row):
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
    planted = {(i.role, i.principal, i.tenant, None) for i in scenario.incidents
               if i.kind == "expired-grant-not-revoked"}
    assert left == planted
    assert planted
