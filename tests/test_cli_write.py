"""The change commands through the CLI: exit codes, one-line errors, and a ledger left as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger

runner = CliRunner()


def run(url: str, *args: str):
    # system: change commands take only a recorded principal or system as actor (issue #15).
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})


@pytest.fixture
def cli_ledger(ledger_url):
    """A ledger built through the CLI: tenant prod, user alice, role ds (on editor) held by alice."""
    steps = [
        ["init", "--org", "acme"],
        ["tenant", "create", "prod"],
        ["user", "create", "alice", "--email", "alice@example.com"],
        ["user", "create", "bob"],
        ["role", "create", "ds", "--scope", "tenant", "--base", "editor", "-p", "model:promote", "--reason", "SEC-1"],
        ["role", "assign", "ds", "--to", "user:alice", "--tenant", "prod", "--reason", "SEC-2"],
    ]
    for step in steps:
        result = run(ledger_url, *step)
        assert result.exit_code == 0, result.output
    return ledger_url


def state(url: str) -> tuple[int, str, bool, str]:
    """Event count, head link, verify result, and (SQLite) the file's bytes after a checkpoint."""
    led = AccessLedger.open(url)
    try:
        summary = led.count(), led.store.head()[2], led.verify().ok
    finally:
        led.close()
    digest = ""
    if not url.startswith("postgresql"):
        import hashlib
        import sqlite3

        with sqlite3.connect(url) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with open(url, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return (*summary, digest)


REFUSALS = [
    (["role", "assign", "ghost", "--to", "user:bob", "--tenant", "prod"], "Error: unknown role 'ghost'"),
    (["role", "assign", "viewer", "--to", "user:bob", "--tenant", "qa"], "Error: unknown tenant 'qa'"),
    (
        ["role", "assign", "ds", "--to", "user:alice", "--tenant", "prod"],
        "Error: user:alice already holds role 'ds' in tenant 'prod' (unassign it first, even if it has expired)",
    ),
    (
        ["role", "unassign", "viewer", "--from", "user:bob", "--tenant", "prod"],
        "Error: user:bob does not hold role 'viewer' in tenant 'prod'",
    ),
    (["role", "delete", "ds"], "Error: role 'ds' is assigned (to user:alice in tenant 'prod'): unassign it first"),
    (["role", "delete", "editor"], "Error: role 'editor' is predefined and cannot be changed"),
    (["role", "change", "admin", "--add", "model:read"], "Error: role 'admin' is predefined and cannot be changed"),
    (
        ["role", "create", "x", "--scope", "organization", "--base", "viewer"],
        "Error: base role 'viewer' has tenant scope, not organization",
    ),
    (["user", "create", "carol", "--at", "2000-01-01T00:00:00Z"], None),
    (["user", "create", "carol", "--at", "2999-01-01T00:00:00Z"], None),
    (
        ["user", "create", "carol", "--at", "soon"],
        "Error: at: 'soon' is not a time: give 2026-03-15T10:00:00Z, "
        "2026-03-15T10:00 (UTC), 2026-03-15, now, today, yesterday or -7d",
    ),
    (["user", "create", "carol", "--at", "yesterday"], None),  # before the newest event
    (
        ["user", "create", "carol smith"],
        "Error: user: 'carol smith' holds white space: a principal's name is one word, e.g. 'carol.smith'",
    ),
    (
        ["user", "create", "carol", "--email", "carol.example.com"],
        "Error: email: 'carol.example.com' is not an email address (NAME@DOMAIN)",
    ),
    (
        ["service-account", "create", "ci deployer"],
        "Error: service account: 'ci deployer' holds white space: a principal's name is one word, e.g. 'ci.deployer'",
    ),
    (
        ["role", "assign", "ds", "--to", "alice", "--tenant", "prod"],
        "Error: principal: 'alice' is not user:NAME, team:NAME or service_account:NAME",
    ),
    (["role", "assign", "ds", "--tenant", "prod"], "Error: Missing option '--to'."),
    (["tenant", "create", "prod"], "Error: tenant 'prod' already exists"),
    (["init"], "Error: the ledger already has an organization"),
    (["bogus"], "Error: No such command 'bogus'."),
]


@pytest.mark.parametrize("args, message", REFUSALS, ids=[" ".join(a[:3]) for a, _ in REFUSALS])
def test_refused_command_prints_one_line_and_writes_nothing(cli_ledger, args, message):
    before = state(cli_ledger)
    result = run(cli_ledger, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    if message is None:
        assert lines[0].startswith("Error: at: ")
    else:
        assert lines[0] == message
    assert state(cli_ledger) == before


def test_commands_on_a_missing_ledger_say_so(tmp_path):
    result = run(str(tmp_path / "none.db"), "tenant", "create", "prod")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: no ledger at {tmp_path / 'none.db'} (run `access-ledger init`, or "
        "import a file that starts with OrganizationCreated)"
    )
    assert not (tmp_path / "none.db").exists()


def test_change_commands_record_actor_and_reason(cli_ledger):
    led = AccessLedger.open(cli_ledger)
    events = [e for _, e in led.read()]
    led.close()
    assert events[-1] == {
        "type": "RoleAssigned",
        "at": events[-1]["at"],
        "actor": "system",
        "role": "ds",
        "principal": "user:alice",
        "tenant": "prod",
        "reason": "SEC-2",
    }


def test_role_show_and_list_in_json(cli_ledger):
    result = run(cli_ledger, "role", "show", "ds", "--format", "json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["base_chain"] == ["editor"]
    assert info["effective"] == ["model:promote", "*:create", "*:read", "*:share"]
    assert info["holders"] == [
        {"role": "ds", "principal": "user:alice", "tenant": "prod", "resource": None, "expires_at": None}
    ]
    listing = json.loads(run(cli_ledger, "role", "list", "--format", "json").stdout)
    assert {r["role"]: r["assignments"] for r in listing}["ds"] == 1


def test_import_export_verify_digest_round_trip(cli_ledger, url_factory, tmp_path):
    out = tmp_path / "history.jsonl"
    assert run(cli_ledger, "export", "--out", str(out)).exit_code == 0
    other = url_factory("copy")
    result = run(other, "import", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported 6 events (positions 1-6)"
    assert run(other, "export").stdout == out.read_text()
    digest = tmp_path / "digest.json"
    assert run(other, "digest", "--out", str(digest)).exit_code == 0
    verified = run(other, "verify", "--digest", str(digest))
    assert verified.exit_code == 0
    assert verified.stdout.startswith("ok: 6 events, chain intact up to position 6")


def test_import_bad_line_writes_nothing(cli_ledger, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"type":"UserCreated","at":"2030-01-01T00:00:00Z","actor":"system","user":"zed"}\n'
        '{"type":"UserCreated","actor":"system","user":"zed2"}\n'
    )
    before = state(cli_ledger)
    result = run(cli_ledger, "import", str(bad))
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: line 1: at: 2030-01-01T00:00:00Z is more than five minutes in the future"
    assert state(cli_ledger) == before


def test_import_of_a_missing_file_is_one_line(cli_ledger, tmp_path):
    result = run(cli_ledger, "import", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: no file {tmp_path / 'nope.jsonl'}"


def test_verify_exits_1_and_names_the_position_when_tampered(tmp_path):
    import sqlite3

    db = str(tmp_path / "t.db")
    for step in (["init"], ["tenant", "create", "prod"], ["user", "create", "alice"]):
        assert run(db, *step).exit_code == 0
    with sqlite3.connect(db) as con:
        con.execute("UPDATE stored_events SET state = replace(state, 'alice', 'mallory') WHERE rowid = 3")
    result = run(db, "verify")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("TAMPERED: first bad position 3:")


def test_sqlite_ledger_file_is_readable_by_its_owner_only(tmp_path):
    db = tmp_path / "private.db"
    assert run(str(db), "init").exit_code == 0
    assert (db.stat().st_mode & 0o777) == 0o600


def test_read_only_ledger_gives_a_clear_error_and_no_change(tmp_path):
    exe = shutil.which("access-ledger") or os.path.join(os.path.dirname(sys.executable), "access-ledger")
    db = tmp_path / "ro.db"
    assert run(str(db), "init").exit_code == 0
    assert run(str(db), "tenant", "create", "prod").exit_code == 0
    before = state(str(db))
    db.chmod(0o400)
    # root ignores permission bits: make the file immutable so that even root may only read it.
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(db)], check=True)
    try:
        done = subprocess.run(
            [exe, "--db", str(db), "user", "create", "x", "--actor", "system"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(db)], check=True)
        db.chmod(0o600)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"Error: the ledger {db} is read-only: nothing was written\n"
    assert state(str(db)) == before


def test_installed_entry_point_runs(tmp_path):
    exe = shutil.which("access-ledger") or os.path.join(os.path.dirname(sys.executable), "access-ledger")
    db = str(tmp_path / "e.db")
    done = subprocess.run([exe, "--db", db, "init"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "recorded at position 1"
    bad = subprocess.run(
        [exe, "--db", db, "role", "assign", "ghost", "--to", "user:x", "--tenant", "t", "--actor", "system"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr == "Error: unknown role 'ghost'\n"
    assert "Traceback" not in bad.stderr


def test_the_entry_point_builds_only_the_invoked_command_and_still_helps_with_all(tmp_path):
    """A command line naming one command runs as before; help and unknown names see every command."""
    exe = shutil.which("access-ledger") or os.path.join(os.path.dirname(sys.executable), "access-ledger")
    db = str(tmp_path / "p.db")

    def run_exe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [exe, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ACCESS_LEDGER_ACTOR": "system"},
        )

    assert run_exe("--db", db, "init").returncode == 0
    assert run_exe("--db", db, "tenant", "create", "prod").returncode == 0
    assert run_exe("--db", db, "verify").stdout.startswith("ok: 2 events")
    top = run_exe("--help").stdout
    for name in ("tenant", "role", "import", "verify", "audit", "evidence", "who-can"):
        assert name in top
    assert "assign" in run_exe("--db", db, "role", "--help").stdout
    assert "tenant" in run_exe("--db", db, "role", "assign", "--help").stdout
    unknown = run_exe("--db", db, "frobnicate")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("Error: No such command 'frobnicate'")
    # A name given as an option's value is not taken for the command.
    named = run_exe("--db", db, "user", "create", "verify", "--reason", "role")
    assert named.returncode == 0, named.stderr
    assert run_exe("--db", db, "user", "list").stdout.split().count("verify") == 1


def test_ledger_location_comes_from_the_environment(tmp_path):
    db = tmp_path / "env.db"
    result = runner.invoke(app, ["init"], env={"ACCESS_LEDGER_DB": str(db), "ACCESS_LEDGER_ACTOR": "user:root"})
    assert result.exit_code == 0
    assert db.exists()
    led = AccessLedger.open(str(db))
    assert [e["actor"] for _, e in led.read()] == ["user:root"]
    led.close()
