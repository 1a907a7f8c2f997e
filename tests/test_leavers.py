"""The leavers audit: an HR terminations file reconciled with the ledger (deactivation, grants, access, SLA)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger
from reports.findings import needs_attention
from reports.leavers import read_hr, run_leavers
from reports.warehouse import Warehouse, foreign_objects

runner = CliRunner()
HR = "person,terminated_at\nalice,2026-01-05\nuser:bob,2026-01-05T00:00:00Z\ncarol,2026-01-05 00:00\nzed,2026-01-05\n"


def d(day: int, hour: int = 0) -> str:
    return f"2026-01-{day:02d}T{hour:02d}:00:00Z"


@pytest.fixture
def history(led):
    """alice leaves in time, bob late (reading a secret meanwhile), carol is never deactivated."""
    led.create_tenant("prod", at=d(1))
    for user in ("alice", "bob", "carol", "dave"):
        led.create_user(user, at=d(1))
    led.register_connector("aws", "prod", at=d(1))
    led.create_team("research", at=d(1))
    led.add_team_member("research", "user:bob", at=d(2))  # 9
    led.assign_role("admin", "user:alice", tenant="prod", at=d(2))  # 10
    led.assign_role("viewer", "user:bob", tenant="prod", at=d(2))  # 11
    led.assign_role("editor", "user:carol", tenant="prod", at=d(2), expires_at=d(7))  # 12
    led.record_connector_access("aws", "prod", "user:bob", "allowed", at=d(5))  # 13: at the termination
    led.deactivate_user("alice", at=d(5, 10))  # 14
    led.record_connector_access("aws", "prod", "user:bob", "denied", at=d(6), context='=HYPERLINK("http://x")')  # 15
    led.record_access("user:bob", "read", "model/m", "allowed", tenant="prod", at=d(6, 1))  # 16
    led.record_access("user:bob", "read", "model/m", "denied", tenant="prod", at=d(6, 2))  # 17
    led.deactivate_user("bob", at=d(8, 3))  # 18
    led.unassign_role("viewer", "user:bob", tenant="prod", at=d(9))  # 19
    led.delete_team("research", at=d(9, 1))  # 20
    led.record_access("user:bob", "read", "model/m", "allowed", tenant="prod", at=d(12))  # 21: after --at
    return led


def write(tmp_path, text: str | bytes, name: str = "hr.csv"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rows_of(result, *columns: str) -> list[tuple]:
    return [tuple(r[c] for c in columns) for r in result.rows]


def test_each_leaver_deactivation_grant_and_access(history, tmp_path):
    with Warehouse.open(history, tmp_path / "w.duckdb") as wh:
        result = run_leavers(wh, write(tmp_path, HR), at=d(10))
    assert rows_of(
        result, "finding", "who", "what", "where", "since", "positions", "deactivated_at", "removed_at", "late_by"
    ) == [
        ("leaver", "user:alice", "termination", "organization", d(5), [14], d(5, 10), None, None),
        ("grant", "user:alice", "role admin", "tenant:prod", d(2), [10], d(5, 10), None, "4d"),
        ("leaver", "user:bob", "termination", "organization", d(5), [18, 19, 20], d(8, 3), d(9, 1), "2d 3h"),
        ("late-deactivation", "user:bob", "deactivated late", "organization", d(6), [18], d(8, 3), None, "2d 3h"),
        (
            "access-after-termination",
            "user:bob",
            "secret read service_connector/aws",
            "tenant:prod",
            d(6),
            [15],
            d(8, 3),
            None,
            None,
        ),
        ("access-after-termination", "user:bob", "read model/m", "tenant:prod", d(6, 1), [16], d(8, 3), None, None),
        ("grant", "user:bob", "member of team:research", "organization", d(2), [9, 20], d(8, 3), d(9, 1), "3d 1h"),
        ("grant", "user:bob", "role viewer", "tenant:prod", d(2), [11, 19], d(8, 3), d(9), "3d"),
        ("leaver", "user:carol", "termination", "organization", d(5), [], None, d(7), "4d"),
        ("late-deactivation", "user:carol", "not deactivated", "organization", d(6), [], None, None, "4d"),
        ("grant", "user:carol", "role editor", "tenant:prod", d(2), [12], None, d(7), "1d"),
        ("not-in-ledger", "user:zed", "no account", "organization", d(5), [], None, None, None),
    ]
    details = {(r["finding"], r["who"], r["what"]): r["detail"] for r in result.rows}
    assert details["grant", "user:bob", "member of team:research"] == "team deleted 2026-01-09T01:00:00Z"
    assert details["grant", "user:carol", "role editor"] == "expired 2026-01-07T00:00:00Z"
    assert details["access-after-termination", "user:bob", "secret read service_connector/aws"] == (
        'denied, 1d after the termination; context: =HYPERLINK("http://x")'
    )
    assert details["leaver", "user:bob", "termination"] == (
        "deactivated 3d 3h after the termination; 2 grant(s) at the termination, all removed; "
        "2 access(es) after the termination"
    )
    assert [r["who"] for r in result.rows if needs_attention("leavers", r)] == ["user:bob"] * 3 + ["user:carol"]
    assert result.name == "leavers" and result.params["hr_rows"] == 4 and result.params["sla"] == "24h"


def test_the_sla_decides_what_is_late(history, tmp_path):
    hr = write(tmp_path, HR)
    with Warehouse.open(history, tmp_path / "w.duckdb") as wh:
        late = {
            sla: [
                (r["who"], r["late_by"])
                for r in run_leavers(wh, hr, sla=sla, at=d(10)).rows
                if r["finding"] == "late-deactivation"
            ]
            for sla in ("10h", "3d", "74h", "75h", "5d")
        }
    assert late["10h"] == [("user:bob", "2d 17h"), ("user:carol", "4d 14h")]
    assert late["3d"] == [("user:bob", "3h"), ("user:carol", "2d")]
    assert late["74h"] == [("user:bob", "1h"), ("user:carol", "1d 22h")]  # 3d 3h after: one hour past 74h
    assert late["75h"] == [("user:carol", "1d 21h")]  # bob deactivated exactly at the deadline: in time
    assert late["5d"] == []  # carol's deadline is --at itself


def test_a_reactivated_leaver_is_late_and_a_deactivation_before_the_termination_is_in_time(led, tmp_path):
    led.create_user("erin", at=d(1))
    led.create_user("finn", at=d(1))
    led.deactivate_user("finn", at=d(2))
    led.deactivate_user("erin", at=d(5, 1))
    led.reactivate_user("erin", at=d(7))  # 6
    hr = write(tmp_path, "termination_time,person\n2026-01-05,erin\n2026-01-04,finn\n")
    with Warehouse.open(led, tmp_path / "w.duckdb") as wh:
        result = run_leavers(wh, hr, at=d(8))
    assert rows_of(result, "finding", "who", "what", "positions", "deactivated_at", "late_by") == [
        ("leaver", "user:erin", "termination", [5], d(5, 1), "1d"),
        ("late-deactivation", "user:erin", "reactivated after the termination", [5, 6], d(5, 1), "1d"),
        ("leaver", "user:finn", "termination", [4], d(2), None),
    ]
    assert result.rows[0]["detail"] == (
        "deactivated 1h after the termination; reactivated 2026-01-07T00:00:00Z; held no grant at the termination"
    )


def test_the_cli_prints_every_column_and_refuses_a_bad_sla(history, tmp_path):
    hr = write(tmp_path, HR)
    base = [
        "--db",
        history.store.url,
        "audit",
        "leavers",
        "--hr",
        str(hr),
        "--warehouse",
        str(tmp_path / "w.duckdb"),
        "--at",
        d(10),
    ]
    result = runner.invoke(app, [*base, "--sla", "3d", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["who"], r["late_by"]) for r in rows if r["finding"] == "late-deactivation"] == [
        ("user:bob", "3h"),
        ("user:carol", "2d"),
    ]
    assert list(rows[0]) == [
        "finding",
        "who",
        "what",
        "where",
        "since",
        "positions",
        "terminated_at",
        "deactivated_at",
        "removed_at",
        "late_by",
        "detail",
        "finding_id",
    ]
    out = tmp_path / "leavers.csv"
    assert runner.invoke(app, [*base, "--format", "csv", "--out", str(out)]).exit_code == 0
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == len(rows)
    table = runner.invoke(app, base)
    assert table.exit_code == 0 and "late-deactivation" in table.stdout and "detail" not in table.stdout
    bad = runner.invoke(app, [*base, "--sla", "3m"])
    assert (bad.exit_code, bad.stderr) == (2, "Error: sla: '3m' is ambiguous: say 3min (minutes) or 3mo (months)\n")
    assert runner.invoke(app, [*base, "--sla", "0h"]).stderr.startswith("Error: sla: '0h' is not a duration")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "line 1: no header: the first line must name the columns person and terminated_at"),
        ("\n\n", "line 1: no header: the first line must name the columns person and terminated_at"),
        (
            "alice,2026-01-05\n",
            "line 1: no header: the first line must name the columns person and terminated_at "
            "(it holds 'alice', '2026-01-05')",
        ),
        (
            "person,when\n",
            "line 1: unknown column 'when' (the columns are person and terminated_at, or termination_time)",
        ),
        (
            "person,terminated_at,department\n",
            "line 1: unknown column 'department' (the columns are person and terminated_at, or termination_time)",
        ),
        ("person\nalice\n", "line 1: missing column terminated_at"),
        ("terminated_at\n2026-01-05\n", "line 1: missing column person"),
        ("person,person,terminated_at\n", "line 1: the column person is given twice"),
        ("person,terminated_at,termination_time\n", "line 1: give terminated_at or termination_time, not both"),
        (
            "person,terminated_at\nalice,tomorrow\n",
            "line 2: terminated_at 'tomorrow' is not a time: give "
            "2026-03-15T10:00:00Z, 2026-03-15T10:00 (UTC) or 2026-03-15",
        ),
        (
            "person,terminated_at\nalice,-7d\n",
            "line 2: terminated_at '-7d' is not a time: give "
            "2026-03-15T10:00:00Z, 2026-03-15T10:00 (UTC) or 2026-03-15",
        ),
        (
            "person,terminated_at\nalice,1969-12-31\n",
            "line 2: terminated_at: '1969-12-31' is outside the years 1970-9998",
        ),
        (
            "person,terminated_at\nalice,2026-01-05\n\nuser:alice,2026-01-06\n",
            "line 4: user:alice is given twice (first on line 2)",
        ),
        (
            "person,terminated_at\nservice_account:ci,2026-01-05\n",
            "line 2: person 'service_account:ci' is a service account, not a person (give user:NAME or NAME)",
        ),
        (
            "person,terminated_at\nteam:research,2026-01-05\n",
            "line 2: person 'team:research' is a team, not a person (give user:NAME or NAME)",
        ),
        (
            "person,terminated_at\ngroup:x,2026-01-05\n",
            "line 2: person: 'group:x' is not user:NAME, team:NAME or service_account:NAME",
        ),
        ("person,terminated_at\n,2026-01-05\n", "line 2: person: must be a non-empty name"),
        ("person,terminated_at\nalice,2026-01-05,x\n", "line 2: 3 cell(s), the header names 2"),
        (b"person,terminated_at\nalice,2026-01-05\nb\xf6b,2026-01-05\n", "line 3: not UTF-8"),
        ("person,terminated_at\nal\x00ice,2026-01-05\n", "line 2: person: contains the control character U+0000"),
        (
            "person,terminated_at\nalice,2026-01-05\n" + "x" * 200_000 + ",2026-01-05\n",
            "line 3: field larger than field limit (131072)",
        ),
    ],
)
def test_a_bad_hr_file_is_one_line_naming_it_and_exit_2_with_nothing_written(history, tmp_path, text, message):
    hr = write(tmp_path, text)
    out, wh = tmp_path / "out.json", tmp_path / "w.duckdb"
    result = runner.invoke(
        app, ["--db", history.store.url, "audit", "leavers", "--hr", str(hr), "--warehouse", str(wh), "--out", str(out)]
    )
    assert (result.exit_code, result.stderr) == (2, f"Error: {hr} {message}\n")
    assert not out.exists() and not wh.exists()


def test_a_missing_folder_or_oversized_hr_file_is_refused(history, tmp_path):
    big = tmp_path / "big.csv"
    with big.open("wb") as f:
        f.truncate(64 * 1024 * 1024 + 1)
    for path, message in (
        (tmp_path / "nope.csv", "no such file"),
        (tmp_path, "is a folder, not a file"),
        (big, "larger than 64 MiB"),
    ):
        result = runner.invoke(
            app,
            [
                "--db",
                history.store.url,
                "audit",
                "leavers",
                "--hr",
                str(path),
                "--warehouse",
                str(tmp_path / "w.duckdb"),
            ],
        )
        assert (result.exit_code, result.stderr) == (2, f"Error: {path}: {message}\n")
    assert not (tmp_path / "w.duckdb").exists()


def test_the_hr_rows_never_enter_the_warehouse_file(history, tmp_path):
    path = tmp_path / "w.duckdb"
    with Warehouse.open(history, path) as wh:
        wh.sync()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with Warehouse.open(history, path) as wh:
        run_leavers(wh, write(tmp_path, HR), at=d(10), sync=False)
        assert foreign_objects(wh.con) == []
        assert wh.con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'hr_terminations'").fetchall() == [
            (0,)
        ]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    with Warehouse.open(history, path) as wh:  # still proven: the bytes are those the ledger recorded
        assert wh.rebuilt is None
        run_leavers(wh, write(tmp_path, HR), at=d(10))


# -- properties -----------------------------------------------------------------------------------

NAME_CHARS = st.sampled_from("abcXYZ09 ,'\"=+-@.é")
PEOPLE = st.text(NAME_CHARS, min_size=1, max_size=8).filter(lambda s: s == s.strip())
INSTANTS = st.datetimes(datetime(1970, 1, 1), datetime(9998, 12, 31), timezones=st.just(UTC))


@given(
    people=st.dictionaries(PEOPLE, INSTANTS, max_size=6),
    prefix=st.booleans(),
    synonym=st.booleans(),
    swap=st.booleans(),
)
def test_an_hr_file_reads_back_what_was_written(tmp_path_factory, people, prefix, synonym, swap):
    header = ["person", "termination_time" if synonym else "terminated_at"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header[::-1] if swap else header)
    for name, when in people.items():
        row = [("user:" if prefix else "") + name, when.isoformat()]
        writer.writerow(row[::-1] if swap else row)
    path = tmp_path_factory.mktemp("hr") / "hr.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    got = read_hr(path)
    assert [(r.person, r.terminated_at) for r in got.rows] == [
        (f"user:{name}", when.replace(tzinfo=None)) for name, when in people.items()
    ]
    assert [r.line for r in got.rows] == list(range(2, len(people) + 2))


def span(seconds: float) -> str | None:
    """The oracle's late_by: whole seconds rounded up, as 1d 2h 3min 4s without the zero parts."""
    s = math.ceil(seconds)
    if s <= 0:
        return None
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "min"), (s % 60, "s")]
    return " ".join(f"{n}{unit}" for n, unit in parts if n)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


# Several accounts a ledger: each example pays for one ledger and one warehouse.
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    toggles=st.lists(st.lists(st.integers(1, 3000), max_size=4), min_size=2, max_size=6),
    terminated=st.lists(st.integers(0, 6000), min_size=6, max_size=6),
    sla=st.integers(1, 3000),
    at=st.integers(0, 9000),
)
def test_late_deactivation_is_active_time_past_the_sla(tmp_path_factory, toggles, terminated, sla, at):
    """Oracle: a leaver is late iff the account was active at some moment in (termination + SLA, at];
    late_by is how long (events after `at` unknown), and deactivated_at the first deactivation in force
    at the termination or after it."""
    folder = tmp_path_factory.mktemp("late")
    led = AccessLedger.open(str(folder / "l.db"), create=True)
    led.init(org="acme", at=T0.isoformat())
    events = []  # (minute, user, deactivate?)
    for i, gaps in enumerate(toggles):
        minute = 0
        for n, gap in enumerate(gaps):
            minute += gap
            events.append((minute, f"u{i}", n % 2 == 0))
    for i in range(len(toggles)):
        led.create_user(f"u{i}", at=T0.isoformat())
    for minute, user, off in sorted(events):
        (led.deactivate_user if off else led.reactivate_user)(user, at=(T0 + timedelta(minutes=minute)).isoformat())
    hr = folder / "hr.csv"
    hr.write_text(
        "person,terminated_at\n"
        + "".join(f"u{i},{(T0 + timedelta(minutes=terminated[i])).isoformat()}\n" for i in range(len(toggles)))
    )
    with Warehouse.open(led, ":memory:") as wh:
        result = run_leavers(wh, hr, sla=f"{sla}min", at=(T0 + timedelta(minutes=at)).isoformat())
    led.close()
    for i in range(len(toggles)):
        changes = [m for m, user, _ in sorted(events) if user == f"u{i}" and m <= at]
        stretches = list(zip([0, *changes], [*changes, None]))  # even ones active, odd ones deactivated
        deadline = terminated[i] + sla
        past = sum(max(0, min(at if end is None else end, at) - max(start, deadline)) for start, end in stretches[0::2])
        first_off = next((start for start, end in stretches[1::2] if end is None or end > terminated[i]), None)
        leaver = next(r for r in result.rows if r["who"] == f"user:u{i}" and r["finding"] == "leaver")
        late = [r for r in result.rows if r["who"] == f"user:u{i}" and r["finding"] == "late-deactivation"]
        assert leaver["late_by"] == span(past * 60)
        assert [r["late_by"] for r in late] == ([span(past * 60)] if past > 0 else [])
        expected_off = None if first_off is None else T0 + timedelta(minutes=first_off)
        assert leaver["deactivated_at"] == (
            None if expected_off is None else expected_off.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
