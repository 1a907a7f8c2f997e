"""Every audit gives the same bytes when run twice on the same ledger (issue #15), and hygiene flags
principals whose names look alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger

runner = CliRunner()
AUDITS = ("review", "least-privilege", "secrets", "sod", "changes", "hygiene")


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("demo-determinism")
    db = str(folder / "demo.db")
    result = runner.invoke(
        app, ["demo", "--db", db, "--evidence", str(folder / "evidence"), "--end", "2026-06-01T00:00:00Z"]
    )
    assert result.exit_code == 0, result.output
    return db


def audit(db: str, *args: str) -> bytes:
    result = runner.invoke(app, ["--db", db, "audit", *args])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("name", AUDITS)
def test_every_audit_gives_the_same_bytes_twice(demo_db, name, fmt):
    first = audit(demo_db, name, "--format", fmt)
    second = audit(demo_db, name, "--format", fmt)
    assert first == second
    assert first.strip()


def test_hygiene_as_a_table_gives_the_same_bytes_twice(demo_db):
    assert audit(demo_db, "hygiene") == audit(demo_db, "hygiene")


@pytest.fixture
def ties(tmp_path: Path) -> str:
    """A ledger whose hygiene findings tie on everything but their positions: the same actor creating
    many users and teams at the same instant, without a reason."""
    db = str(tmp_path / "ties.db")
    lines = [
        b'{"type":"OrganizationCreated","at":"2026-01-01T00:00:00Z","actor":"system","name":"acme",'
        b'"preset":"zenml-pro"}'
    ]
    for i in range(300):
        lines.append(b'{"type":"UserCreated","at":"2026-01-02T00:00:00Z","actor":"user:root","user":"u%d"}' % i)
        lines.append(b'{"type":"TeamCreated","at":"2026-01-02T00:00:00Z","actor":"user:root","team":"t%d"}' % i)
    with AccessLedger.open(db, create=True) as led:
        led.import_lines(lines)
    return db


def test_hygiene_rows_that_tie_come_in_position_order_every_time(ties):
    import json

    runs = [audit(ties, "hygiene", "--at", "2026-02-01T00:00:00Z", "--format", "json") for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    rows = json.loads(runs[0])
    no_reason = [r["positions"] for r in rows if r["finding"] == "change-without-reason" and r["what"] == "UserCreated"]
    assert len(no_reason) == 300
    assert no_reason == sorted(no_reason)


@pytest.fixture
def look_alikes(tmp_path: Path) -> str:
    db = str(tmp_path / "alike.db")
    with AccessLedger.open(db, create=True) as led:
        led.init(at="2026-01-01T00:00:00Z")
        at = "2026-01-02T00:00:00Z"
        for user in ("alice", "\u0430lice", "admin1", "adminl", "mallory", "malIory", "bob", "carol"):
            led.create_user(user, at=at)
        led.create_service_account("ci-bot", at=at)
        led.create_service_account("ci-b0t", at=at)
        led.create_team("ops", at=at)
        led.create_team("\u03bfps", at=at)
        led.create_team("bob", at=at)  # a team and a user may share a name: not a look-alike
    return db


def test_hygiene_flags_principals_whose_names_look_alike(look_alikes):
    import json

    rows = json.loads(audit(look_alikes, "hygiene", "--at", "2026-02-01T00:00:00Z", "--format", "json"))
    found = [(r["who"], r["what"], r["detail"]) for r in rows if r["finding"] == "confusable-name"]
    assert found == [
        (
            "service_account:ci-b0t",
            "service_account:ci-bot",
            "service_account:ci-b0t and service_account:ci-bot look alike (both read as service_account:ci-bot)",
        ),
        (
            "team:ops",
            "team:\u03bfps",
            "team:ops and team:\u03bfps look alike (both read as team:ops); non-ASCII: team:\u03bfps has U+03BF",
        ),
        ("user:admin1", "user:adminl", "user:admin1 and user:adminl look alike (both read as user:adminl)"),
        (
            "user:alice",
            "user:\u0430lice",
            "user:alice and user:\u0430lice look alike (both read as user:alice); non-ASCII: user:\u0430lice has U+0430",
        ),
        ("user:malIory", "user:mallory", "user:malIory and user:mallory look alike (both read as user:mallory)"),
    ]
