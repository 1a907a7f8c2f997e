"""The README stays true: every command has help text and appears in the README."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.main import get_command

from access_ledger.cli import app

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


# -- the tour, typed in order ------------------------------------------------------------------


def tour_commands() -> list[tuple[str, int]]:
    """The shell lines of the README's tour, continuations joined, with the exit each one implies:
    0, unless a comment on it or right below it starts `exit N:`."""
    tour = README[README.index("## A tour of the commands") : README.index("## The event format")]
    commands: list[list] = []
    for block in tour.split("```bash\n")[1:]:
        lines = iter(block.split("```\n", 1)[0].splitlines())
        for line in lines:
            if line.lstrip().startswith("#"):
                if commands:
                    commands[-1][1] += " " + line
                continue
            while line.rstrip().endswith("\\"):
                line = line.rstrip()[:-1] + next(lines)
            commands.append([line, line.partition("  #")[2]])
    out = []
    for line, comments in commands:
        match = re.search(r"#\s*exit (\d):", comments)
        out.append((line, int(match.group(1)) if match else 0))
    return out


def test_the_tour_marks_its_denied_question():
    assert [line.split(" --")[0] for line, code in tour_commands() if code] == [
        "access-ledger check service_account:ci-deployer create pipeline_deployment/fraud"
    ]


def test_the_readme_tour_runs_in_order_as_written(tmp_path):
    """Every command of the tour, run as written in a fresh folder, exits as the README says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESS_LEDGER_")}
    for line, expected in tour_commands():
        export = re.fullmatch(r"export (\w+)=(\S+)\s*(#.*)?", line)
        if export:
            env[export.group(1)] = export.group(2)
            continue
        result = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == expected, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, line
    assert env["ACCESS_LEDGER_ACTOR"] == "user:carol"
    assert (tmp_path / "copy.db").exists() and (tmp_path / "q1-evidence" / "manifest.json").exists()
