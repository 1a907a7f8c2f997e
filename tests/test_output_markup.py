"""Every user-chosen string is data, never markup: tables show it as typed, and hygiene compares
names as a markup-reading display would show them.

A reason or name `[/]` once ended every table in `unexpected MarkupError`; a user `[b]otto` showed
as `otto` beside the real one, and hygiene did not see the look-alike.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from access_ledger.cli import app
from access_ledger.cli.common import Format, render
from ledger.app import AccessLedger

runner = CliRunner()
AT = "2026-02-01T00:00:00Z"


def _ledger(url: str) -> None:
    with AccessLedger.open(url, create=True) as led:
        led.init(org="acme", at="2026-01-01T00:00:00Z")
        led.create_tenant("prod", at="2026-01-01T00:00:00Z")
        for user in ("otto", "[b]otto", "[/]", ":smile:"):
            led.create_user(user, at="2026-01-02T00:00:00Z", reason="[/]")
        led.assign_role("viewer", "user:[b]otto", tenant="prod", at="2026-01-03T00:00:00Z", reason="[bold red]ok[/]")
        led.assign_role("viewer", "user:[/]", tenant="prod", at="2026-01-03T00:00:00Z", reason="[/]")


COMMANDS = [
    ["user", "list"],
    ["who-can", "read", "model/m", "--tenant", "prod", "--at", AT],
    ["what-can", "user:[b]otto", "--tenant", "prod", "--at", AT],
    ["role", "show", "viewer"],
    ["audit", "changes", "--from", "2026-01-01", "--to", "2026-02-01"],
    ["audit", "hygiene", "--at", AT],
]


def test_names_and_reasons_that_look_like_markup_are_shown_as_typed_in_every_table(ledger_url):
    _ledger(ledger_url)
    for args in COMMANDS:
        result = runner.invoke(app, ["--db", ledger_url, *args])
        assert result.exit_code == 0, (args, result.output)
        assert "unexpected" not in result.output and "Traceback" not in result.output, result.output
        if args[0] in ("user", "who-can", "role"):
            assert "[b]otto" in result.stdout and "[/]" in result.stdout, (args, result.stdout)
    users = runner.invoke(app, ["--db", ledger_url, "user", "list"]).stdout
    assert ":smile:" in users and "\N{SMILING FACE WITH SMILING EYES}" not in users


def test_hygiene_sees_a_name_that_a_markup_reader_shows_as_another(ledger_url):
    _ledger(ledger_url)
    result = runner.invoke(app, ["--db", ledger_url, "audit", "hygiene", "--at", AT, "--format", "json"])
    assert result.exit_code == 0, result.output
    found = {(r["who"], r["what"]) for r in json.loads(result.stdout) if r["finding"] == "confusable-name"}
    assert ("user:[b]otto", "user:otto") in found, found


# Text as a person may type it: brackets, slashes, colons and backslashes mixed with letters.
TYPED = st.lists(
    st.sampled_from(
        [*"ab[]/\\:@#=,.-_ *`<>|&();!~+", "&amp;", "&copy;", "[x](y)", "[b]", "[/]", "[link=x]", ":smile:", "\u0430"]
    ),
    min_size=1,
    max_size=12,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(title=TYPED, cells=st.lists(TYPED, min_size=1, max_size=4))
def test_a_table_shows_every_cell_and_its_title_as_typed(title, cells):
    rows = [{f"c{i}": cell for i, cell in enumerate(cells)}]
    lines = render(rows, Format.table, title=title, caption=title).splitlines()
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith("\u250f"))
    bottom = next(i for i, line in enumerate(lines) if line.lstrip().startswith("\u2514"))

    def squeezed(text: str) -> str:
        return "".join(text.split())

    # Title and caption may be folded to the table's width: as typed once the folding is undone.
    assert squeezed(title) in squeezed("".join(lines[:top])), lines
    assert squeezed(title) in squeezed("".join(lines[bottom + 1 :])), lines
    # A cell may be folded across lines at its spaces, never inside a word: each word is on a line as typed.
    for cell in cells:
        for word in cell.split():
            assert any(word in line for line in lines[top:bottom]), (word, lines)


def test_the_demo_names_paths_that_look_like_markup_as_typed(tmp_path):
    db, evidence = tmp_path / "[b]x.db", tmp_path / "[b]ev"
    result = runner.invoke(app, ["demo", "--db", str(db), "--evidence", str(evidence), "--end", "2026-03-01T00:00:00Z"])
    assert result.exit_code == 0, result.output
    assert f"into {db}" in result.stdout and f"evidence bundle: {evidence}/" in result.stdout, result.stdout


def _markdown_cells(text: str) -> list[list[str]]:
    """The cells of the first table in markdown text as a CommonMark reader shows them; any markup read
    in a cell (a link, emphasis, code, HTML) is kept as a marker, so a cell read as markup never matches."""
    from markdown_it import MarkdownIt

    rows: list[list[str]] = []
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and rows:
            rows[-1].append("".join(c.content if c.type == "text" else f"<{c.type}>" for c in token.children or ()))
    return rows


@settings(max_examples=200, deadline=None)
@given(cells=st.lists(TYPED, min_size=1, max_size=4))
def test_a_markdown_table_shows_every_cell_as_typed(cells):
    rows = [{f"c{i}": cell for i, cell in enumerate(cells)}]
    shown = _markdown_cells(render(rows, Format.markdown, title="t"))
    assert [[" ".join(c.split()) for c in row] for row in shown] == [
        [f"c{i}" for i in range(len(cells))],
        [" ".join(c.split()) for c in cells],
    ]
