"""The evidence bundle's and report's access reviews (#18): population files that hash to the chained start
event, decisions, remediation and time to revoke, exceptions, and an edited population caught by both checkers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_reviews import build
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from projections.pit import Timeline
from projections.reviews import campaign, decision_event, derive, removals, start_event
from reports.check_bundle import REVIEW_FILE, review_stems
from reports.evidence import export_bundle

runner = CliRunner()


def decide(led: AccessLedger, name: str, item: int, decision: str, at: str, reason: str | None = None) -> None:
    c = campaign(led, name)
    population = derive(led, c)
    reviewer = population[item - 1]["reviewer"]
    led.append(dict(decision_event(c, population, item, decision, reason, reviewer), at=at))


def close(led: AccessLedger, name: str, at: str, undecided: str, auto_revoke: bool) -> None:
    c = campaign(led, name)
    event = {
        "type": "ReviewClosed",
        "at": at,
        "actor": "user:carol",
        "campaign": name,
        "undecided": undecided,
        "auto_revoke": auto_revoke,
    }
    done = removals(c, derive(led, c), undecided, Timeline(led).current(), "user:carol") if auto_revoke else []
    led.append_many([event, *(dict(ev, at=at) for ev in done)])


def start(led: AccessLedger, name: str, at: str, reviewer: str, reviewers: list[str], due: str | None) -> None:
    event, _ = start_event(
        led,
        name,
        ["prod", "staging"] if name == "Q3" else ["prod"],
        reviewer,
        reviewers,
        "user:erin",
        False,
        due,
        at,
        "user:carol",
        None,
    )
    led.append(event)


@pytest.fixture
def history(ledger_url):
    """Q3 (closed with revocations by the close) and Q4 (closed --no-auto-revoke, its revoke recorded later)."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q3", "2026-02-01T00:00:00Z", "user:carol", ["team:research=user:dana"], None)
        decide(led, "Q3", 1, "revoke", "2026-02-02T10:00:00Z")
        decide(led, "Q3", 3, "revoke", "2026-02-03T09:00:00Z", "left the team")
        decide(led, "Q3", 2, "keep", "2026-02-03T10:00:00Z", "on call")
        decide(led, "Q3", 5, "keep", "2026-02-03T11:00:00Z")
        close(led, "Q3", "2026-02-05T12:00:00Z", "exception", True)
        start(led, "Q4", "2026-03-01T00:00:00Z", "user:erin", [], "2026-03-15T00:00:00Z")
        decide(led, "Q4", 3, "revoke", "2026-03-02T00:00:00Z", "no longer needed")
        close(led, "Q4", "2026-03-03T00:00:00Z", "keep", False)
        led.unassign_role("viewer", "user:carol", tenant="prod", at="2026-03-20T06:00:00Z")
    return ledger_url


def positions(url: str) -> dict[str, list[tuple[int, dict]]]:
    out: dict[str, list[tuple[int, dict]]] = {}
    with AccessLedger.open(url) as led:
        for pos, ev in led.read_changes():
            out.setdefault(ev["type"], []).append((pos, ev))
    return out


def export(url: str, out: Path, **period: str) -> Path:
    with AccessLedger.open(url) as led:
        export_bundle(led, out, **period)
    return out


def record(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "reviews" / f"{name}.json").read_text())


def test_each_campaign_has_its_population_file_hashing_to_its_start_event(history, tmp_path):
    bundle = export(history, tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    starts = {ev["campaign"]: (pos, ev) for pos, ev in positions(history)["ReviewStarted"]}
    assert sorted(p.name for p in (bundle / "reviews").iterdir()) == [
        "Q3.json",
        "Q3.population.jsonl",
        "Q4.json",
        "Q4.population.jsonl",
    ]
    for name, (pos, ev) in starts.items():
        data = (bundle / "reviews" / f"{name}.population.jsonl").read_bytes()
        assert hashlib.sha256(data).hexdigest() == ev["population_sha256"]
        assert data.count(b"\n") == ev["items"] and data.endswith(b"\n")
        for rel in (f"reviews/{name}.population.jsonl", f"reviews/{name}.json"):
            assert manifest["files"][rel]["sha256"] == hashlib.sha256((bundle / rel).read_bytes()).hexdigest()
        r = record(bundle, name)
        assert (r["start_position"], r["population"]["items"], r["population"]["sha256"]) == (
            pos,
            ev["items"],
            ev["population_sha256"],
        )
        assert manifest["reviews"][name]["file"] == f"reviews/{name}.json"
    assert json.loads(data.splitlines()[0]) == [
        1,
        "user:alice",
        "admin",
        "prod",
        None,
        None,
        None,
        True,
        "person",
        False,
    ]


def test_decisions_remediation_and_time_to_revoke(history, tmp_path):
    bundle = export(history, tmp_path / "b")
    events = positions(history)
    (close_q3, _), (close_q4, _) = events["ReviewClosed"]
    q3 = record(bundle, "Q3")
    assert q3["scope"] == {
        "tenants": ["prod", "staging"],
        "privileged_only": False,
        "reviewer": "user:carol",
        "reviewers": ["team:research=user:dana"],
        "fallback_reviewer": "user:erin",
        "due": None,
    }
    assert q3["owner"] == "user:carol" and q3["closed"]["position"] == close_q3
    items = q3["items"]
    assert [(i["reviewer"], i["decision"], i["outcome"]) for i in items] == [
        ("user:erin", "revoke", "revoke"),
        ("user:carol", "keep", "keep"),
        ("user:dana", "revoke", "revoke"),
        ("user:dana", None, "exception"),
        ("user:dana", "keep", "keep"),
    ]
    assert (items[1]["reason"], items[1]["decided_at"]) == ("on call", "2026-02-03T10:00:00Z")
    decided = {ev["item"]: pos for pos, ev in events["ReviewDecided"] if ev["campaign"] == "Q3"}
    assert {i["item"]: i["decision_position"] for i in items if i["decision"]} == decided
    # The close's removals follow it in the same write: the RoleUnassigned, then the team membership.
    assert items[0]["remediation"]["position"] == close_q3 + 1
    assert items[0]["remediation"]["type"] == "RoleUnassigned"
    assert items[2]["remediation"]["position"] == close_q3 + 2
    assert items[2]["remediation"]["type"] == "TeamMemberRemoved"
    assert [i["time_to_revoke_seconds"] for i in items] == [
        3 * 86400 + 2 * 3600,
        None,
        2 * 86400 + 3 * 3600,
        None,
        None,
    ]
    assert q3["exceptions"] == [
        {
            "item": 4,
            "principal": "user:carol",
            "role": "editor",
            "tenant": "prod",
            "exception": "undecided at close: left as an exception",
        }
    ]
    assert q3["progress"] == {
        "items": 5,
        "decided": 4,
        "undecided": 1,
        "kept": 2,
        "revoked": 2,
        "carried_out": 2,
        "exceptions": 1,
    }
    q4 = record(bundle, "Q4")
    ((removal, _),) = [(p, ev) for p, ev in events["RoleUnassigned"] if ev["principal"] == "user:carol"]
    assert q4["closed"]["auto_revoke"] is False and removal > close_q4
    revoked = q4["items"][2]
    assert (revoked["principal"], revoked["role"], revoked["outcome"]) == ("user:carol", "viewer", "revoke")
    assert revoked["remediation"]["position"] == removal
    assert revoked["time_to_revoke_seconds"] == 18 * 86400 + 6 * 3600
    assert [i["outcome"] for i in q4["items"]] == ["keep", "keep", "revoke"] and q4["exceptions"] == []


def test_a_revocation_not_recorded_by_the_end_of_the_period_is_an_exception(history, tmp_path):
    bundle = export(history, tmp_path / "b", end="2026-03-10T00:00:00Z")
    q4 = record(bundle, "Q4")
    assert q4["items"][2]["remediation"] is None
    assert q4["exceptions"][0]["exception"] == "revocation not carried out (due 2026-03-15T00:00:00Z)"
    assert q4["progress"]["carried_out"] == 0


def test_the_report_shows_every_campaign(history, tmp_path):
    bundle = export(history, tmp_path / "b")
    html = (bundle / "report.html").read_text()
    assert '<h2 id="access-reviews">Access reviews</h2>' in html and '<a href="#access-reviews">' in html
    assert "Campaign Q3" in html and "Campaign Q4" in html
    q3 = record(bundle, "Q3")
    assert q3["population"]["sha256"] in html and "<code>reviews/Q3.population.jsonl</code>" in html
    assert "4 of 5 items decided" in html and "2 of 2 revocations carried out" in html
    assert "item 4 (user:carol, editor in prod): undecided at close: left as an exception" in html
    data = html.split('id="rv-1-data" data-encoding="json">')[1].split("</script>")[0]
    table = json.loads(data)
    assert table["rows"] == 5 and table["attention"] == 1
    assert "TeamMemberRemoved" in json.dumps(table["values"]) and "on call" in json.dumps(table["values"])


def _rehash(bundle: Path, rel: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / rel).read_bytes()
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_an_edited_and_rehashed_population_is_caught_by_both_checkers(history, tmp_path):
    bundle = export(history, tmp_path / "b")
    ok = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert ok.exit_code == 0, ok.output
    path = bundle / "reviews" / "Q3.population.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # the last item dropped from the population
    _rehash(bundle, "reviews/Q3.population.jsonl")
    result = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        f"problem: reviews/Q3.population.jsonl: 4 lines and SHA-256 "
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}, but the ReviewStarted event of campaign "
        f"'Q3' at position {record(bundle, 'Q3')['start_position']} records 5 items and SHA-256 "
        f"{record(bundle, 'Q3')['population']['sha256']}"
    ]
    done = subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == problems[0].removeprefix("problem: ")


@pytest.mark.parametrize("edit", ["decision", "reason", "dropped", "remediation"])
def test_a_campaign_record_edited_and_rehashed_is_caught_by_both_checkers(history, tmp_path, edit):
    bundle = export(history, tmp_path / "b")
    name = "Q4" if edit == "remediation" else "Q3"
    rec = record(bundle, name)
    item = next(i for i in rec["items"] if i["decision"] == "revoke" or edit != "remediation")
    if edit == "decision":
        item["decision"] = "keep" if item["decision"] == "revoke" else "revoke"
    elif edit == "reason":
        item["reason"] = "approved by the CISO"
    elif edit == "dropped":
        rec["items"].remove(item)
    else:  # a removal that never happened, named at the decision's own position
        item["remediation"] = {
            "position": item["decision_position"],
            "type": "RoleUnassigned",
            "at": item["decided_at"],
            "reason": "done",
        }
    (bundle / "reviews" / f"{name}.json").write_text(json.dumps(rec))
    _rehash(bundle, f"reviews/{name}.json")
    result = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and problems[0].startswith(
        f"problem: reviews/{name}.json: item" if edit != "dropped" else f"problem: reviews/{name}.json: the"
    )
    done = subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.splitlines()[0] == problems[0].removeprefix("problem: ")


def test_a_removed_population_file_and_a_stray_review_file_are_caught(history, tmp_path):
    bundle = export(history, tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "reviews" / "Q4.population.jsonl").unlink()
    del manifest["files"]["reviews/Q4.population.jsonl"]
    (bundle / "reviews" / "notes.txt").write_text("x\n")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rehash(bundle, "reviews/notes.txt")
    done = subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[:2] == [
        "reviews/notes.txt: not a review file's name (reviews/NAME.population.jsonl or reviews/NAME.json)",
        "reviews/Q4.population.jsonl: missing, although review campaign 'Q4' started at position "
        f"{record(bundle, 'Q4')['start_position']}",
    ]


def test_a_campaign_started_before_the_period_is_noted_not_failed(history, tmp_path):
    bundle = export(history, tmp_path / "b", start="2026-03-01T12:00:00Z")
    assert sorted(p.name for p in (bundle / "reviews").iterdir()) == ["Q4.json", "Q4.population.jsonl"]
    result = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert (
        "note: reviews/Q4.population.jsonl: its campaign started before this bundle's events, so its start "
        "event (count and SHA-256) is not in the bundle: not checked against it"
    ) in result.stdout
    done = subprocess.run(
        [sys.executable, "-I", str(bundle / "check_bundle.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "note: reviews/Q4.population.jsonl" in done.stdout


def test_a_ledger_without_campaigns_has_no_review_files(ledger_url, tmp_path):
    build(ledger_url)
    bundle = export(ledger_url, tmp_path / "b")
    assert not (bundle / "reviews").exists()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert not [f for f in manifest["files"] if f.startswith("reviews/")] and manifest["reviews"] == {}
    assert "No access review campaign was started or open in this period." in (bundle / "report.html").read_text()


@given(st.lists(st.text(min_size=1, max_size=200), min_size=2, max_size=2, unique=True))
def test_review_file_stems_are_plain_file_names_and_hashed_ones_never_collide(names):
    for name in names:
        for stem in review_stems(name):
            for suffix in (".population.jsonl", ".json"):
                assert REVIEW_FILE.match(f"reviews/{stem}{suffix}"), (name, stem)
            assert len(stem.encode()) + len(".population.jsonl") <= 255
    assert review_stems(names[0])[1] != review_stems(names[1])[1]
    plain = [review_stems(n)[0] for n in names]
    assert plain[0] != plain[1]


def test_a_removal_before_the_revoke_decision_is_no_remediation(ledger_url, tmp_path):
    """Removed and granted again before the reviewer decided revoke: the bundle names no remediation and
    lists the revocation as not carried out."""
    build(ledger_url)
    with AccessLedger.open(ledger_url) as led:
        start(led, "Q4", "2026-03-01T00:00:00Z", "user:erin", [], "2026-03-15T00:00:00Z")
        led.unassign_role("viewer", "user:carol", tenant="prod", at="2026-03-01T06:00:00Z")
        led.assign_role("viewer", "user:carol", tenant="prod", at="2026-03-01T07:00:00Z")
        decide(led, "Q4", 5, "revoke", "2026-03-02T00:00:00Z", "no longer needed")
        close(led, "Q4", "2026-03-03T00:00:00Z", "keep", False)
    q4 = record(export(ledger_url, tmp_path / "b"), "Q4")
    revoked = q4["items"][4]
    assert (revoked["principal"], revoked["outcome"], revoked["remediation"]) == ("user:carol", "revoke", None)
    assert q4["exceptions"][0]["exception"] == "revocation not carried out (due 2026-03-15T00:00:00Z)"
    assert q4["progress"]["carried_out"] == 0
