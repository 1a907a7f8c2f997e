"""An archived ledger, in a read-only folder, is read where it lies (issue #17, item 4).

Reading commands (verify, check, export, who-can) answer; a change command is refused with one
line; nothing is created beside the file. Root ignores permission bits, so the folder is also made
read-only the way an archive is: mode 555 (the ledger treats a folder with no write bit as
read-only, whoever runs it) and, where the test may mount, a read-only bind mount (which stops
root too).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from access_ledger.cli import app
from ledger.app import AccessLedger

runner = CliRunner()
STEPS = [
    ["init", "--org", "acme"],
    ["tenant", "create", "prod"],
    ["user", "create", "alice"],
    ["connector", "register", "aws-prod", "--tenant", "prod"],
    ["role", "assign", "admin", "--to", "user:alice", "--tenant", "prod", "--reason", "SEC-1"],
]
READS = [
    ["verify"],
    ["check", "user:alice", "read_secret_value", "service_connector/aws-prod", "--tenant", "prod"],
    ["export"],
    ["who-can", "read_secret_value", "service_connector/aws-prod", "--tenant", "prod"],
]


def run(url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args], env={"ACCESS_LEDGER_ACTOR": "system"})


def _archive(folder: Path) -> Path:
    """A ledger in `folder`, closed (no -wal/-shm left), then the file 444 and the folder 555."""
    folder.mkdir()
    url = str(folder / "ledger.db")
    for step in STEPS:
        result = run(url, *step)
        assert result.exit_code == 0, result.output
    assert sorted(os.listdir(folder)) == ["ledger.db"]
    os.chmod(url, 0o444)
    os.chmod(folder, 0o555)
    return folder


@pytest.fixture
def archive(tmp_path) -> Iterator[Path]:
    folder = _archive(tmp_path / "archive")
    yield folder
    os.chmod(folder, 0o755)


@pytest.fixture
def mounted(archive, tmp_path) -> Iterator[Path]:
    """The archive seen through a read-only bind mount (needs root; skipped elsewhere)."""
    target = tmp_path / "mnt"
    target.mkdir()
    if os.geteuid() != 0 or sys.platform != "linux":
        pytest.skip("a read-only bind mount needs root on Linux (as another user, mode 555 already stops writes)")
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(archive), str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_read_only_folder_opens_the_ledger_read_only_and_immutable(archive):
    led = AccessLedger.open(str(archive / "ledger.db"))
    try:
        uri = led.store.env["SQLITE_DBNAME"]
        assert uri.startswith("file:/") and uri.endswith("?mode=ro&immutable=1")
        assert led.store.label == str(archive / "ledger.db")  # messages name the file, not the URI
        assert led.verify().ok
    finally:
        led.close()
    assert os.listdir(archive) == ["ledger.db"]


def test_a_read_only_file_in_a_writable_folder_is_opened_read_only(tmp_path):
    folder = _archive(tmp_path / "a")
    os.chmod(folder, 0o755)
    led = AccessLedger.open(str(folder / "ledger.db"))
    try:
        assert led.store.env["SQLITE_DBNAME"].endswith("?mode=ro")  # SQLite may keep its -shm beside it
        assert led.head() == len(STEPS)
    finally:
        led.close()


def test_a_writable_ledger_is_opened_as_before(tmp_path):
    url = str(tmp_path / "ledger.db")
    assert run(url, "init", "--org", "acme").exit_code == 0
    led = AccessLedger.open(url)
    try:
        assert led.store.env["SQLITE_DBNAME"] == url
    finally:
        led.close()


def _reads_answer_and_writes_are_refused(folder: Path) -> None:
    url = str(folder / "ledger.db")
    before = {p: (folder / p).stat().st_mtime_ns for p in os.listdir(folder)}
    for args in READS:
        result = run(url, *args)
        assert result.exit_code == 0, (args, result.output)
    assert "user:alice" in run(url, *READS[3]).output
    assert run(url, *READS[2]).output.count("\n") == len(STEPS)
    refused = run(url, "user", "create", "bob")
    assert refused.exit_code == 2
    assert refused.output == f"Error: the ledger {url} is read-only: nothing was written\n"
    assert {p: (folder / p).stat().st_mtime_ns for p in os.listdir(folder)} == before


def test_reading_commands_work_on_a_read_only_folder_and_writes_are_one_line(archive):
    _reads_answer_and_writes_are_refused(archive)


def test_reading_commands_work_on_a_read_only_mount(mounted):
    _reads_answer_and_writes_are_refused(mounted)
