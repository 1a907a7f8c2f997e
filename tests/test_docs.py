"""The README stays true: every command has help text and appears in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command

from ledger.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def all_commands():
    root = get_command(app)

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            path = f"{prefix} {name}".strip()
            if getattr(cmd, "commands", None):
                yield from walk(cmd, path)
            else:
                yield path, cmd

    return list(walk(root, ""))


COMMANDS = all_commands()


def test_there_are_commands():
    names = {path for path, _ in COMMANDS}
    assert {"init", "role assign", "import", "export", "verify", "digest"} <= names


@pytest.mark.parametrize("path, command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_has_help_and_is_in_the_readme(path, command):
    assert (command.help or "").strip(), f"{path} has no help text"
    assert f"access-ledger {path}" in README, f"README does not show `access-ledger {path}`"


def test_readme_names_the_two_commands():
    assert "access-ledger demo" in README
    assert "python -m pytest -q" in README
