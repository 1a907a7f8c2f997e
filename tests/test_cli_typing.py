"""What a new user types: natural times, typos in names, bare groups, and answers that say why."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from access_ledger.cli.common import Format, render
from ledger.app import AccessLedger
from ledger.errors import ValidationError
from ledger.timeutil import cli_instant, parse_duration, parse_period

runner = CliRunner()
T0 = "2026-01-01T00:00:00Z"


def run(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})


@pytest.fixture
def q(led):
    led.create_tenant("production", at=T0)
    led.create_tenant("staging", at=T0)
    led.create_user("alice", at=T0)
    led.create_user("bob", at="2026-01-05T00:00:00Z")
    led.create_team("research", at="2026-01-05T00:00:00Z")
    led.create_role("ds", "tenant", ["model:promote"], base="editor", at="2026-01-05T00:00:00Z")
    led.assign_role("ds", "team:research", tenant="production", at="2026-01-05T00:00:00Z")
    led.add_team_member("research", "user:alice", at="2026-01-05T00:00:00Z")
    led.register_connector("aws-prod", "production", connector_type="aws", at="2026-01-05T00:00:00Z")
    led.register_connector("gcp-old", "production", at="2026-01-05T00:00:00Z")
    led.delete_connector("gcp-old", "production", at="2026-01-05T00:00:00Z")
    return led.store.url


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- times as people type them ------------------------------------------------------------------


def asked_at(url: str, when: str) -> str:
    result = run(
        url, "check", "user:alice", "promote", "model/m", "--tenant", "production", "--at", when, "--format", "json"
    )
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)["at"]


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("2026-01-03T10:00:00Z", "2026-01-03T10:00:00Z"),
        ("2026-01-03T12:00:00+02:00", "2026-01-03T10:00:00Z"),
        ("2026-01-03", "2026-01-03T00:00:00Z"),
        ("2026-01-03T10:00", "2026-01-03T10:00:00Z"),
        ("2026-01-03 10:00", "2026-01-03T10:00:00Z"),
        ("2026-01-03 10:00:30", "2026-01-03T10:00:30Z"),
    ],
    ids=["rfc3339", "offset-zone", "date", "T-without-zone", "space-without-zone", "seconds-without-zone"],
)
def test_an_absolute_time_is_read_in_utc(q, typed, meant):
    assert asked_at(q, typed) == meant


@pytest.mark.parametrize(
    "typed, delta",
    [
        ("now", timedelta(0)),
        ("-7d", timedelta(days=-7)),
        ("+30d", timedelta(days=30)),
        ("-12h", timedelta(hours=-12)),
        ("-30min", timedelta(minutes=-30)),
        ("-2w", timedelta(weeks=-2)),
        ("-3mo", timedelta(days=-90)),
        ("+1y", timedelta(days=365)),
        ("-45s", timedelta(seconds=-45)),
    ],
)
def test_an_offset_is_counted_from_now(q, typed, delta):
    before = datetime.now(UTC)
    got = datetime.fromisoformat(asked_at(q, typed))
    after = datetime.now(UTC)
    assert before + delta <= got <= after + delta


@pytest.mark.parametrize("typed, days_back", [("today", 0), ("yesterday", 1)])
def test_today_and_yesterday_are_midnight_utc(q, typed, days_back):
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_back)
    assert asked_at(q, typed) == midnight.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_expires_at_takes_an_offset(q):
    before = datetime.now(UTC)
    result = run(q, "role", "assign", "viewer", "--to", "user:bob", "--tenant", "production", "--expires-at", "+30d")
    assert result.exit_code == 0, result.output
    led = AccessLedger.open(q)
    try:
        [grant] = [g for g in led.grants("viewer") if g["principal"] == "user:bob"]
    finally:
        led.close()
    expires = datetime.fromisoformat(grant["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)


@pytest.mark.parametrize("typed", ["2026-01-03", "2026-01-03T10:00", "now", "-7d"])
def test_jsonl_events_stay_strict(q, tmp_path, typed):
    line = json.dumps({"type": "UserCreated", "at": typed, "actor": "system", "user": "carol"})
    path = tmp_path / "one.jsonl"
    path.write_text(line + "\n")
    result = run(q, "import", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: line 1: at: '{typed}' ")


def test_a_time_that_is_not_one_is_refused_with_the_forms_to_use(q):
    result = run(q, "who-can", "read", "model/m", "--tenant", "production", "--at", "last tuesday")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: at: 'last tuesday' is not a time: give 2026-03-15T10:00:00Z, 2026-03-15T10:00 "
        "(UTC), 2026-03-15, now, today, yesterday or -7d\n"
    )


def test_every_time_option_says_a_time_without_zone_is_utc():
    for args in (
        ["check"],
        ["who-can"],
        ["what-can"],
        ["explain"],
        ["diff"],
        ["export"],
        ["user", "create"],
        ["role", "assign"],
        ["audit", "review"],
        ["audit", "secrets"],
        ["evidence", "export"],
    ):
        result = runner.invoke(app, [*args, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert "a time without zone being UTC" in " ".join(result.stdout.split()), args


def test_durations_refuse_a_bare_m_and_take_min_mo_y():
    with pytest.raises(ValidationError, match=re.escape("'3m' is ambiguous: say 3min (minutes) or 3mo (months)")):
        parse_duration("3m")
    assert parse_duration("3min") == timedelta(minutes=3)
    assert parse_duration("3mo") == timedelta(days=90)
    assert parse_duration("2y") == timedelta(days=730)


@pytest.mark.parametrize(
    "period, first, last",
    [
        ("2026", "2026-01-01T00:00:00Z", "2026-12-31T23:59:59.999999Z"),
        ("2026-03", "2026-03-01T00:00:00Z", "2026-03-31T23:59:59.999999Z"),
        ("2026-02", "2026-02-01T00:00:00Z", "2026-02-28T23:59:59.999999Z"),
        ("2026-12", "2026-12-01T00:00:00Z", "2026-12-31T23:59:59.999999Z"),
        ("2026-Q1", "2026-01-01T00:00:00Z", "2026-03-31T23:59:59.999999Z"),
        ("2026-q4", "2026-10-01T00:00:00Z", "2026-12-31T23:59:59.999999Z"),
    ],
)
def test_a_named_period_runs_from_its_first_instant_to_its_last(period, first, last):
    assert parse_period(period) == (first, last)


@pytest.mark.parametrize("period", ["2026-13", "2026-Q5", "26", "2026-1", "Q1", "1969"])
def test_a_period_that_is_not_one_is_refused(period):
    with pytest.raises(ValidationError, match="^period: "):
        parse_period(period)


def test_lenient_times_keep_the_years_limits():
    with pytest.raises(ValidationError, match="outside the years 1970-9998"):
        cli_instant("9999-01-01")


def test_a_period_on_an_audit_sets_from_and_to(q, tmp_path):
    led = AccessLedger.open(q)
    try:
        led.record_connector_access("aws-prod", "production", "user:alice", "allowed", at="2026-01-06T00:00:00Z")
        led.record_connector_access("aws-prod", "production", "user:alice", "allowed", at="2026-02-06T00:00:00Z")
    finally:
        led.close()

    def reads(*args: str) -> int:
        result = run(q, "audit", "secrets", *args, "--warehouse", str(tmp_path / "w.duckdb"), "--format", "json")
        assert result.exit_code == 0, result.output
        return len(json.loads(result.stdout))

    assert (
        reads("--period", "2026-01"),
        reads("--period", "2026-02"),
        reads("--period", "2026-Q1"),
        reads("--period", "2025"),
    ) == (1, 1, 2, 0)
    assert reads("--from", "2026-01-06 00:00:01") == 1


def test_evidence_export_takes_a_period_and_refuses_it_with_from(q, tmp_path):
    both = run(q, "evidence", "export", "--period", "2026-Q1", "--from", "2026-01-01", "--out", str(tmp_path / "b"))
    assert (both.exit_code, both.stderr) == (2, "Error: period: give --period or --from/--to, not both\n")
    assert not (tmp_path / "b").exists()
    result = run(q, "evidence", "export", "--period", "2026-01", "--out", str(tmp_path / "jan"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "jan" / "manifest.json").read_text())
    assert (manifest["period"]["from"], manifest["period"]["to"]) == (
        "2026-01-01T00:00:00Z",
        "2026-01-31T23:59:59.999999Z",
    )


# -- names: a typo is an error, a name of the past is an answer ----------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["who-can", "read", "model/m", "--tenant", "prodution"],
            "unknown tenant 'prodution': never recorded in this ledger (did you mean production?)",
        ),
        (
            ["what-can", "user:alise"],
            "unknown principal 'user:alise': never recorded in this ledger (did you mean user:alice?)",
        ),
        (
            ["what-can", "user:nobody"],
            "unknown principal 'user:nobody': never recorded in this ledger (no recorded name is close)",
        ),
        (
            ["explain", "team:reserch", "read", "model/m", "--tenant", "production"],
            "unknown principal 'team:reserch': never recorded in this ledger (did you mean team:research?)",
        ),
        (
            ["check", "user:alice", "read", "model/m", "--tenant", "stagin"],
            "unknown tenant 'stagin': never recorded in this ledger (did you mean staging?)",
        ),
        (
            ["check", "user:bobb", "read", "model/m", "--tenant", "production", "--at", "2026-01-02"],
            "unknown principal 'user:bobb': never recorded in this ledger (did you mean user:bob?)",
        ),
        (
            ["who-can", "read_secret_value", "service_connector/aws-prd", "--tenant", "production"],
            "unknown service connector 'aws-prd' in tenant 'production': never recorded in this ledger "
            "(did you mean aws-prod?)",
        ),
        (["role", "show", "dss"], "unknown role 'dss': never recorded in this ledger (did you mean ds?)"),
    ],
    ids=[
        "who-can-tenant",
        "what-can-principal",
        "what-can-nothing-close",
        "explain-team",
        "check-tenant",
        "check-principal-at",
        "who-can-connector",
        "role-show",
    ],
)
def test_a_name_never_recorded_is_an_error_with_the_closest_names(q, args, message):
    result = run(q, *args)
    assert result.exit_code == 2, result.stderr
    assert (result.stdout, result.stderr) == ("", f"Error: {message}\n")


def test_a_name_that_existed_but_not_at_that_instant_is_an_answer(q):
    # bob was recorded on the 5th: asked about the 2nd, he is denied, not a typo
    denied = run(q, "check", "user:bob", "read", "model/m", "--tenant", "production", "--at", "2026-01-02")
    assert denied.exit_code == 1
    assert denied.stdout.endswith(": user:bob does not exist\n")
    empty = run(q, "what-can", "user:bob", "--at", "2026-01-02", "--format", "json")
    assert (empty.exit_code, json.loads(empty.stdout)) == (0, [])
    deleted = run(
        q, "who-can", "read_secret_value", "service_connector/gcp-old", "--tenant", "production", "--format", "json"
    )
    assert deleted.exit_code == 0, deleted.output


def test_check_batch_refuses_a_line_naming_what_was_never_recorded(q, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"principal": "user:alice", "action": "read", "resource": "model/m", "tenant": "production"})
        + "\n"
        + json.dumps({"principal": "user:alice", "action": "read", "resource": "model/m", "tenant": "prodution"})
        + "\n"
    )
    result = run(q, "check", "--batch", str(path))
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: line 2: unknown tenant 'prodution': never recorded in this ledger (did you mean production?)\n"
    )


# -- answers that say why -----------------------------------------------------------------------


def test_explain_of_a_denied_question_exits_1_and_says_why_not(q):
    result = run(q, "explain", "user:bob", "promote", "model/m", "--tenant", "production")
    assert result.exit_code == 1
    assert re.fullmatch(
        r"denied: user:bob may not promote model/m in tenant production at \S+: no assignment of "
        r"this principal \(directly or through a team\) allows it\n",
        result.stdout,
    )
    allowed = run(q, "explain", "user:alice", "promote", "model/m", "--tenant", "production")
    assert allowed.exit_code == 0
    assert "user:alice is a member of team:research" in allowed.stdout
    as_json = run(q, "explain", "user:bob", "promote", "model/m", "--tenant", "production", "--format", "json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["allowed"] is False


def test_diff_to_defaults_to_now(q):
    before = iso(datetime.now(UTC))
    result = run(q, "diff", "--from", "2026-01-01", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert ("user:alice", "gained", "model:promote") in {(r["principal"], r["change"], r["permission"]) for r in rows}
    table = run(q, "diff", "--from", "2026-01-01")
    title = table.stdout.split("\n", 1)[0]
    assert re.search(r"from 2026-01-01T00:00:00Z to (\S+)", title).group(1) >= before[:19]


def test_connector_list_shows_tenant_type_and_status(q):
    result = run(q, "connector", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"connector": "aws-prod", "tenant": "production", "type": "aws", "status": "active"},
        {"connector": "gcp-old", "tenant": "production", "type": None, "status": "deleted"},
    ]


# -- the shell around the answers ----------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["role"], ["audit"]], ids=["bare", "role", "audit"])
def test_a_group_named_alone_prints_its_help(args, tmp_path):
    entry = shutil.which("access-ledger") or pytest.skip("the access-ledger entry point is not installed")
    result = subprocess.run([entry, *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2  # as typer does for a missing command
    assert result.stderr.startswith(f"Usage: access-ledger {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "\nCommands:\n" in result.stderr
    assert "Error:" not in result.stderr


def test_a_table_never_splits_a_word():
    rows = [
        {
            "who": "service_account:pipeline-runner-eu-west-1",
            "what": ", ".join(
                [
                    "pipeline:create",
                    "model_version:promote",
                    "service_connector:read_secret_value",
                    "pipeline_deployment:create",
                    "artifact_version:read",
                ]
                * 3
            ),
            "where": "production, staging, research",
            "positions": ", ".join(map(str, range(100000, 100060))),
        }
    ]
    text = render(rows, Format.table)
    printed = set(re.split(r"[\s│┃]+", text))
    assert {w for row in rows for v in row.values() for w in v.split()} <= printed
    assert len({len(line) for line in text.splitlines()}) == 1  # every line closed by its border


def test_a_refused_import_into_a_new_path_leaves_no_ledger_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"type": "OrganizationCreated", "at": T0, "actor": "system", "name": "acme", "preset": "zenml-pro"})
        + "\n"
        + '{"type": "TenantCreated"}\n'
    )
    target = tmp_path / "new.db"
    result = run(str(target), "import", str(bad))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: line 2: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    refused_init = run(str(target), "init", "--preset", "nope")
    assert refused_init.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_a_refused_import_into_an_existing_ledger_keeps_it(tmp_path):
    target = tmp_path / "l.db"
    assert run(str(target), "init").exit_code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "TenantCreated"}\n')
    assert run(str(target), "import", str(bad)).exit_code == 2
    assert target.exists()
    assert run(str(target), "verify", "--quick").exit_code == 0
