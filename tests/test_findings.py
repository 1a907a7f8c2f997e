"""The lifecycle of audit findings (issue 29): stable ids, accept/suppress/rules/reopen in the chain, authority,
the audits' own section for triaged findings, and the evidence bundle's audits/findings.csv."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger import triage
from access_ledger.cli import app
from ledger.app import AccessLedger
from ledger.errors import LedgerError, Unauthorised, UnknownEntity, ValidationError
from ledger.findings import cause_of, finding_id, rule_id
from reports.findings import ATTENTION, decision_for, fold_decisions, needs_attention, row_finding_id, with_finding_ids

runner = CliRunner()
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _story(url: str) -> dict[str, int]:
    """zoe grants herself admin in prod; admin assigns bob a role, then bob is deactivated; vic is a viewer."""
    with AccessLedger.open(url, create=True) as led:
        led.init("acme", at=at(0))
        led.create_tenant("prod", at=at(0))
        for name in ("admin", "zoe", "bob", "vic"):
            led.create_user(name, at=at(0))
        led.assign_role("org_admin", "user:admin", at=at(0), reason="T-1")
        led.assign_role("org_viewer", "user:vic", at=at(0), reason="T-2")
        led.assign_role("org_admin", "user:zoe", at=at(0), reason="T-3")
        grant = led.assign_role("admin", "user:zoe", "prod", actor="user:zoe", at=at(1), reason="bootstrap")
        bob = led.assign_role("viewer", "user:bob", "prod", actor="user:admin", at=at(2), reason="T-4")
        gone = led.deactivate_user("bob", actor="user:admin", at=at(3), reason="left")
    return {"grant": grant, "bob": bob, "gone": gone}


@pytest.fixture
def story(ledger_url):
    return ledger_url, _story(ledger_url)


def zoe_id(pos: dict[str, int]) -> str:
    return finding_id("hygiene", "self-grant", "user:zoe", "tenant:prod", cause_of([pos["grant"]], {}))


def cli(url: str, *args: str, actor: str = "user:admin"):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": actor})


def hygiene(url: str, *args: str) -> list[dict]:
    result = cli(url, "audit", "hygiene", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_finding_ids_are_stable_across_runs_backends_cli_and_api(story):
    url, pos = story
    fid = zoe_id(pos)  # a constant of the facts: the same on SQLite and PostgreSQL
    rows = hygiene(url)
    assert [r["finding_id"] for r in rows if r["finding"] == "self-grant"] == [fid]
    assert [r["finding_id"] for r in hygiene(url)] == [r["finding_id"] for r in rows]
    with AccessLedger.open(url) as led:
        assert fid in {f["finding_id"] for f in triage.findings(led, audits=("hygiene",))}
    # rows that need no attention carry no id
    assert all(r["finding_id"] is None for r in rows if r["finding"] == "admin-count")


def test_accept_moves_the_finding_to_its_own_section_until_it_expires(story):
    url, pos = story
    fid = zoe_id(pos)
    until = at(40)
    result = cli(url, "finding", "accept", fid, "--reason", "SEC-88", "--until", until)
    assert result.exit_code == 0, result.output
    table = cli(url, "audit", "hygiene")
    assert "Accepted and suppressed findings" in table.stdout and "SEC-88" in table.stdout
    now_rows = hygiene(url)
    mine = [r for r in now_rows if r.get("finding_id") == fid]
    assert [r["finding_state"] for r in mine] == ["accepted"] and mine[0]["decided_by"] == "user:admin"
    assert mine[0]["until"] == until
    listed = cli(url, "finding", "list", "--state", "accepted", "--format", "json")
    assert [r["finding_id"] for r in json.loads(listed.stdout)] == [fid]
    # after the expiry the finding needs attention again; a past audit (before the decision) shows it open
    for when in (at(41), at(2)):
        back = [r for r in hygiene(url, "--at", when) if r.get("finding_id") == fid]
        assert [r.get("finding_state") for r in back] == [None]


def test_caption_counts_exclude_accepted_findings(story):
    url, pos = story
    before = cli(url, "audit", "hygiene").stdout
    assert cli(url, "finding", "accept", zoe_id(pos), "--reason", "SEC-88").exit_code == 0
    after = cli(url, "audit", "hygiene").stdout
    n_before = int(before.split(" need attention")[0].split()[-1])
    assert f"{n_before - 1} need attention" in after


def test_suppression_rule_then_reopen(story):
    url, pos = story
    result = cli(
        url, "finding", "suppress", "--rule", "hygiene/self-grant", "--principal", "user:zoe", "--reason", "bootstrap"
    )
    assert result.exit_code == 0, result.output
    rid = rule_id("hygiene", "self-grant", "user:zoe", None)
    assert rid in result.stdout
    [row] = [r for r in hygiene(url) if r.get("finding_id") == zoe_id(pos)]
    assert row["finding_state"] == "suppressed" and row["decision"] == rid
    assert cli(url, "finding", "reopen", rid, "--reason", "re-review").exit_code == 0
    [row] = [r for r in hygiene(url) if r.get("finding_id") == zoe_id(pos)]
    assert row.get("finding_state") is None


def test_reopen_a_finding_brings_it_back(story):
    url, pos = story
    fid = zoe_id(pos)
    assert cli(url, "finding", "suppress", fid, "--reason", "noise").exit_code == 0
    assert cli(url, "finding", "reopen", fid, "--reason", "not noise").exit_code == 0
    [row] = [r for r in hygiene(url) if r.get("finding_id") == fid]
    assert row.get("finding_state") is None


@pytest.mark.parametrize(
    ("args", "actor", "message"),
    [
        (["--reason", "x"], "user:vic", "lacks member:update in the organization (needed for FindingAccepted; triage"),
        (["--reason", "x"], "user:zoe", "may not accept a finding about themselves"),
        (["--reason", "x", "--until", "2001-01-01T00:00:00Z"], "user:admin", "is not after the decision's time"),
        ([], "user:admin", "reason: give --reason"),
    ],
)
def test_refused_decisions_leave_the_ledger_unchanged(story, args, actor, message):
    url, pos = story
    with AccessLedger.open(url) as led:
        head = led.head()
    result = cli(url, "finding", "accept", zoe_id(pos), *args, actor=actor)
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "the service" not in result.output  # the CLI wrote it: the refusal says why triage was judged
    with AccessLedger.open(url) as led:
        assert led.head() == head


def test_accepting_a_finding_ones_own_change_caused_is_refused(story):
    url, pos = story
    with AccessLedger.open(url) as led:
        bob = [f for f in triage.findings(led, audits=("hygiene",)) if f["principal"] == "user:bob"]
        assert bob
        with pytest.raises(Unauthorised, match="their own change"):
            triage.decide(led, bob[0]["finding_id"], accept=True, reason="x", actor="user:admin")
        with pytest.raises(Unauthorised, match="about themselves"):
            led.append(_forged(pos, "user:zoe"))


def test_unknown_finding_id_is_refused_with_the_closest(story):
    url, pos = story
    fid = zoe_id(pos)
    wrong = fid[:-1] + ("0" if fid[-1] != "0" else "1")
    result = cli(url, "finding", "accept", wrong, "--reason", "x")
    assert result.exit_code != 0 and f"did you mean {fid}" in result.output
    with AccessLedger.open(url) as led, pytest.raises(UnknownEntity, match="unknown finding"):
        triage.reopen(led, fid, reason="x", actor="user:admin")  # never decided: nothing to reopen


def _forged(pos: dict[str, int], actor: str) -> dict:
    cause = cause_of([pos["grant"]], {})
    return {
        "type": "FindingAccepted",
        "at": at(5),
        "actor": actor,
        "finding": finding_id("hygiene", "self-grant", "user:zoe", "tenant:prod", cause),
        "audit": "hygiene",
        "kind": "self-grant",
        "principal": "user:zoe",
        "scope": "tenant:prod",
        "cause": cause,
        "reason": "forged",
    }


def test_a_forged_acceptance_is_flagged_by_audit_authority_and_refused_when_enforced(url_factory):
    url = url_factory("plain")
    pos = _story(url)
    with AccessLedger.open(url) as led:
        led.import_lines([json.dumps(_forged(pos, "user:vic"))])
        # an acceptance naming another principal than the finding's own fails its id check
        with pytest.raises(ValidationError, match="is not the id"):
            led.append({**_forged(pos, "user:admin"), "principal": "user:bob"})
    result = cli(url, "audit", "authority", "--format", "json")
    flagged = [r for r in json.loads(result.stdout) if r["event"] == "FindingAccepted"]
    assert [(r["who"], r["finding"]) for r in flagged] == [("user:vic", "unauthorised-change")]
    strict = url_factory("strict")
    with AccessLedger.open(strict, create=True) as led:
        led.init("acme", enforce_authority=True, at=at(0))
    with AccessLedger.open(strict) as led:
        led.create_tenant("prod", at=at(0))
        for name in ("zoe", "vic"):
            led.create_user(name, at=at(0))
        led.assign_role("admin", "user:zoe", "prod", at=at(1), reason="bootstrap")
        head = led.head()
        with pytest.raises(LedgerError, match="lacks member:update"):
            led.import_lines([json.dumps({**_forged({"grant": head}, "user:vic"), "scope": "tenant:prod"})])
        assert led.head() == head


def test_triage_runs_only_the_audits_it_must(story, monkeypatch):
    """Accepting a hygiene finding runs hygiene alone (searched first); listing accepted findings runs only the
    audits some decision names; an unknown id runs them all (to name the closest)."""
    import reports.audits

    url, pos = story
    ran: list[str] = []
    real = reports.audits.run_audit

    def counted(wh, name, **kw):
        ran.append(name)
        return real(wh, name, **kw)

    monkeypatch.setattr(reports.audits, "run_audit", counted)
    assert cli(url, "finding", "accept", zoe_id(pos), "--reason", "SEC-88").exit_code == 0
    assert ran == ["hygiene"]
    ran.clear()
    listed = cli(url, "finding", "list", "--state", "accepted", "--format", "json")
    assert [r["finding_id"] for r in json.loads(listed.stdout)] == [zoe_id(pos)] and ran == ["hygiene"]
    ran.clear()
    assert cli(url, "finding", "accept", "F-0000000000000000", "--reason", "x").exit_code != 0
    assert sorted(ran) == sorted(triage.TRIAGE_AUDITS)


def _decision_on(led: AccessLedger, principal: str, actor: str, when: str) -> dict:
    """An acceptance of the principal's hygiene finding, by `actor`, written from the finding's own parts."""
    [f] = [f for f in triage.findings(led, audits=("hygiene",)) if f["principal"] == principal][:1]
    return {
        "type": "FindingAccepted",
        "at": when,
        "actor": actor,
        "reason": "mine",
        **{k: f[k] for k in ("audit", "kind", "principal", "scope", "cause")},
        "finding": f["finding_id"],
    }


def test_the_ledger_refuses_an_acceptance_of_a_finding_the_actors_own_change_caused(story):
    """Written directly (not through triage), on a ledger that enforces nothing: the ledger holds the cause."""
    url, _ = story
    with AccessLedger.open(url) as led:
        forged = _decision_on(led, "user:bob", "user:admin", at(5))
        head = led.head()
        with pytest.raises(Unauthorised, match=r"their own change \(position \d+, RoleAssigned\)"):
            led.import_lines([json.dumps(forged)])
        assert led.head() == head


def test_a_self_caused_acceptance_that_came_in_by_import_is_flagged_and_not_honoured(url_factory):
    """Imported together with its cause, the ledger cannot tell yet: `audit authority` flags it."""
    source = url_factory("source")
    _story(source)
    with AccessLedger.open(source) as led:
        lines = [line.decode() for line in led.export_lines()]
        forged = _decision_on(led, "user:bob", "user:admin", at(5))
    copy = url_factory("copy")
    with AccessLedger.open(copy, create=True) as led:
        led.import_lines([*lines, json.dumps(forged)])
        position = led.head()
    result = cli(copy, "audit", "authority", "--format", "json")
    assert result.exit_code == 0, result.output
    flagged = [r for r in json.loads(result.stdout) if r["finding"] == "self-triage"]
    assert [(r["who"], r["position"]) for r in flagged] == [("user:admin", position)]
    assert "made the change that caused it" in flagged[0]["detail"]
    # and no audit honours it: bob's finding still needs attention
    [bob] = [r for r in hygiene(copy) if r.get("finding_id") == forged["finding"]]
    assert bob.get("finding_state") is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    until=st.integers(min_value=1, max_value=100),
    audit_at=st.integers(min_value=0, max_value=120),
    changed=st.booleans(),
    refused=st.booleans(),
)
def test_an_accepted_finding_comes_back_exactly_when_it_expires_or_its_facts_change(until, audit_at, changed, refused):
    """Oracle: at an instant at or after the acceptance, the finding is out of the rows needing attention iff
    that instant is before `until`, the facts are those accepted (a change of facts is a new id) and the
    authority rules allowed the acceptance (a refused one is as if never made)."""
    row = {"finding": "self-grant", "who": "user:zoe", "where": "tenant:prod", "positions": [7]}
    fid = finding_id("hygiene", "self-grant", "user:zoe", "tenant:prod", "p:7")
    accepted = {
        "type": "FindingAccepted",
        "at": at(0),
        "actor": "user:admin",
        "reason": "r",
        "finding": fid,
        "audit": "hygiene",
        "kind": "self-grant",
        "until": at(until),
        "position": 12,
    }
    if changed:  # the grant was removed and made again: the row names the new event
        row = {**row, "positions": [9]}
    row_id = finding_id("hygiene", "self-grant", "user:zoe", "tenant:prod", cause_of(row["positions"], {}))
    findings, rules = fold_decisions([accepted], at(audit_at), frozenset({12} if refused else {11}))
    decided = decision_for("hygiene", row, row_id, findings, rules, at(audit_at))
    assert (decided is not None) == (audit_at < until and not changed and not refused)


def test_the_bundle_carries_the_triaged_findings_and_both_checkers_catch_an_edit(story, tmp_path):
    url, pos = story
    fid = zoe_id(pos)
    assert cli(url, "finding", "accept", fid, "--reason", "SEC-88", "--until", at(60)).exit_code == 0
    from reports.evidence import export_bundle, verify_bundle

    out = tmp_path / "bundle"
    # the export's period ends at its start, to the second: let the decision's second pass first
    import time

    time.sleep(1.1)
    with AccessLedger.open(url) as led:
        result = export_bundle(led, out)
    assert result.manifest["findings"] == {"file": "audits/findings.csv", "rows": 1, "accepted": 1, "suppressed": 0}
    text = (out / "audits" / "findings.csv").read_text()
    assert fid in text and "SEC-88" in text
    assert "Accepted and suppressed findings" in (out / "report.html").read_text()
    assert verify_bundle(out, recompute=True).ok
    (out / "audits" / "findings.csv").write_text(text.replace("SEC-88", "SEC-00"))
    assert "audits/findings.csv" in verify_bundle(out).changed
    checked = subprocess.run(
        [sys.executable, "-I", str(out / "check_bundle.py"), str(out)], capture_output=True, text=True, check=False
    )
    assert checked.returncode != 0 and "audits/findings.csv" in checked.stdout + checked.stderr
    # Re-hashed into an unsigned manifest, the forged decision passes the hashes: recompute names it.
    from test_recompute import rehash

    rehash(out, "audits/findings.csv")
    assert verify_bundle(out).ok
    recomputed = verify_bundle(out, recompute=True)
    assert not recomputed.ok and "audits/findings.csv" in " ".join(recomputed.problems)


# -- decisions the authority rules do not allow are not honoured (a forged import, a self-triage) ---------------


def _forged_decision(pos: dict[str, int], kind: str, actor: str) -> dict:
    """A decision taking zoe's self-grant finding off the list, of the given event type, by `actor`."""
    if kind == "SuppressionRuleAdded":
        rule = rule_id("hygiene", "self-grant", "user:zoe", "prod")
        return {
            "type": kind,
            "at": at(5),
            "actor": actor,
            "rule": rule,
            "audit": "hygiene",
            "kind": "self-grant",
            "principal": "user:zoe",
            "tenant": "prod",
            "reason": "forged",
        }
    return {**_forged(pos, actor), "type": kind}


def _state_of(url: str, fid: str, *args: str) -> str | None:
    [row] = [r for r in hygiene(url, *args) if r.get("finding_id") == fid]
    return row.get("finding_state")


@pytest.mark.parametrize(
    ("kind", "actor"),
    [
        ("FindingAccepted", "user:vic"),  # an org_viewer: lacks member:update
        ("FindingSuppressed", "user:vic"),
        ("SuppressionRuleAdded", "user:vic"),
        ("FindingAccepted", "user:bob"),  # deactivated at that instant: holds nothing
    ],
)
def test_an_imported_decision_its_actor_had_no_right_to_make_is_not_honoured(story, kind, actor):
    """On a ledger that does not enforce authority the import gets in; every audit still shows the finding as
    needing attention, `audit authority` names the decision, and the actor's later promotion changes nothing."""
    url, pos = story
    fid = zoe_id(pos)
    forged = _forged_decision(pos, kind, actor)
    with AccessLedger.open(url) as led:
        led.import_lines([json.dumps(forged)])
        # judged at its own instant: a right held later does not make it good
        led.assign_role("org_admin", "user:vic", actor="user:admin", at=at(6), reason="T-9")
    assert _state_of(url, fid) is None and _state_of(url, fid, "--at", at(5.5)) is None
    listed = cli(url, "finding", "list", "--state", "all", "--audit", "hygiene", "--format", "json")
    assert [r["state"] for r in json.loads(listed.stdout) if r["finding_id"] == fid] == ["open"]
    with AccessLedger.open(url) as led:
        from access_ledger import api

        answer = api.audit(led, "hygiene")  # the call behind /v1/audits
    assert fid in {r["finding_id"] for r in answer["rows"]} and answer["triaged"] == []
    result = cli(url, "audit", "authority", "--format", "json")
    assert result.exit_code == 0, result.output
    [flag] = [r for r in json.loads(result.stdout) if r["event"] == kind]
    assert flag["who"] == actor and flag["reason"] == "forged"
    named = forged.get("finding") or forged["rule"]
    assert flag["what"] == f"{kind} {named} (hygiene self-grant of user:zoe)" + (
        " in tenant prod" if kind == "SuppressionRuleAdded" else ""
    )
    # the same decision by someone allowed to make it is honoured
    assert cli(url, "finding", "accept", fid, "--reason", "SEC-88").exit_code == 0
    assert _state_of(url, fid) == "accepted"


def test_a_bundle_honours_no_forged_decision_and_recompute_agrees(story, tmp_path, monkeypatch):
    """The export and `evidence verify --recompute` (and the standalone checker) give the same answer: the
    forged acceptance is in no findings.csv, its finding counts as needing attention, audit authority names it.
    The decisions are judged once for all the export's audits."""
    import reports.authority

    url, pos = story
    fid = zoe_id(pos)
    with AccessLedger.open(url) as led:
        led.import_lines([json.dumps(_forged(pos, "user:vic"))])
    from reports.evidence import export_bundle, verify_bundle

    judged: list[object] = []
    real = reports.authority.install_rules

    def counted(wh, path, only=None):
        judged.extend([only] if only is not None else [])
        return real(wh, path, only)

    monkeypatch.setattr(reports.authority, "install_rules", counted)
    out = tmp_path / "bundle"
    with AccessLedger.open(url) as led:
        result = export_bundle(led, out)
    assert len(judged) == 1
    assert result.manifest["findings"] == {"file": "audits/findings.csv", "rows": 0, "accepted": 0, "suppressed": 0}
    assert fid not in (out / "audits" / "findings.csv").read_text()
    assert fid in (out / "audits" / "hygiene.csv").read_text()
    assert "FindingAccepted " + fid in (out / "audits" / "authority.csv").read_text()
    assert "Accepted and suppressed findings" not in (out / "report.html").read_text()
    recomputed = verify_bundle(out, recompute=True)
    assert recomputed.ok, recomputed.problems
    checked = subprocess.run(
        [sys.executable, "-I", str(out / "check_bundle.py"), str(out)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


_KINDS = sorted({k for kinds in ATTENTION.values() if kinds for k in kinds}) + ["authorised", "routine-row"]


@st.composite
def _audit_rows(draw):
    """An audit and rows whose `finding` is mostly among that audit's own kinds (else another audit's, or none)."""
    audit = draw(st.sampled_from(sorted(ATTENTION)))
    own = sorted(ATTENTION[audit] or ())
    finding = st.none() | st.sampled_from(_KINDS) | (st.sampled_from(own) if own else st.nothing())
    row = st.fixed_dictionaries(
        {
            "finding": finding,
            "who": st.none() | st.sampled_from(["user:ann", "user:bob", "service_account:ci"]),
            "where": st.none() | st.sampled_from(["prod", "dev"]),
            "positions": st.none() | st.lists(st.integers(1, 10**6), max_size=3),
            "detail": st.text(max_size=5),
        }
    )
    return audit, draw(st.lists(row, max_size=30))


@settings(max_examples=80, deadline=None)
@given(audit_rows=_audit_rows(), with_finding=st.booleans())
def test_finding_ids_are_those_of_each_row_needing_attention(audit_rows, with_finding):
    """with_finding_ids picks the rows in Arrow; each id is still needs_attention's row and row_finding_id's id."""
    audit, rows = audit_rows
    import pyarrow as pa

    if not with_finding:
        rows = [{k: v for k, v in row.items() if k != "finding"} for row in rows]
    columns = (
        ["finding", "who", "where", "positions", "detail"] if with_finding else ["who", "where", "positions", "detail"]
    )
    types = {"positions": pa.list_(pa.int64())}
    table = pa.Table.from_pylist(rows, schema=pa.schema([(c, types.get(c, pa.string())) for c in columns]))
    expected = [row_finding_id(audit, row) if needs_attention(audit, row) else None for row in table.to_pylist()]
    got = with_finding_ids(audit, table)
    if ATTENTION.get(audit, frozenset()) == frozenset():
        assert got.column_names == columns
    else:
        assert got.column("finding_id").to_pylist() == expected
        assert got.drop_columns(["finding_id"]).equals(table)
