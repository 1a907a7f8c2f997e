"""What every command shares: opening the ledger, turning errors into one line, and output formats."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ledger.errors import LedgerError, UnknownEntity, ValidationError
from ledger.private import scrub, write_private
from ledger.timeutil import CLI_TIME_HELP, cli_instant, parse_period

if TYPE_CHECKING:
    from ledger.app import AccessLedger


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


# --out FILE names its format by its extension; a --format given beside it must agree.
OUT_SUFFIXES: dict[str, Format] = {
    ".json": Format.json,
    ".csv": Format.csv,
    ".md": Format.markdown,
    ".markdown": Format.markdown,
}


def _reconcile_out(ctx: typer.Context) -> None:
    """Once both --format and --out are parsed (in either order), infer or check the format from the file name."""
    if "fmt" not in ctx.params or "out" not in ctx.params or ctx.params["out"] is None:
        return
    out, fmt = Path(ctx.params["out"]), ctx.params["fmt"]
    wanted = OUT_SUFFIXES.get(out.suffix.lower())
    if wanted is None or not isinstance(fmt, Format) or fmt is wanted:
        return
    source = ctx.get_parameter_source("fmt")
    if source is None or source.name in ("DEFAULT", "DEFAULT_MAP", "ENVIRONMENT"):
        ctx.params["fmt"] = wanted
        return
    raise typer.BadParameter(
        f"{out.name} names {wanted.value} output, but --format {fmt.value} was asked: "
        f"drop --format, or name the file {out.stem}{_suffix_of(fmt)}",
        param_hint="'--out'",
    )


def _suffix_of(fmt: Format) -> str:
    return {Format.json: ".json", Format.csv: ".csv", Format.markdown: ".md", Format.table: ".txt"}[fmt]


def _format_given(ctx: typer.Context, value: Format) -> Format:
    ctx.params["fmt"] = value
    _reconcile_out(ctx)
    return ctx.params["fmt"]


def _out_given(ctx: typer.Context, value: Path | None) -> Path | None:
    ctx.params["out"] = value
    _reconcile_out(ctx)
    return value


FormatOption = Annotated[
    Format,
    typer.Option(
        "--format",
        "-f",
        help="Output format (default: from the --out file's extension, .json .csv .md, else table).",
        callback=_format_given,
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Write the output to this file instead of standard output; .json, .csv or .md "
        "chooses the format (a --format given beside it must agree).",
        callback=_out_given,
    ),
]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor",
        help="Who makes the change: system, or a user:NAME or service_account:NAME this "
        "ledger has recorded (deactivated ones too; init takes any). Imported JSONL may name any "
        "actor, since histories name platform admins never recorded as users "
        "(default: $ACCESS_LEDGER_ACTOR, else user:<OS user>).",
    ),
]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why: a ticket or a justification.")]
AtOption = Annotated[str | None, typer.Option("--at", help=f"When it happened (default now): {CLI_TIME_HELP}.")]
PeriodOption = Annotated[
    str | None,
    typer.Option(
        "--period", help="A named period, 2026, 2026-03 or 2026-Q1, in UTC: sets --from and --to (not with them)."
    ),
]


def when(text: str | None, what: str) -> str | None:
    """A time option as people type it (CLI_TIME_HELP), in canonical form; None stays None."""
    return None if text is None else cli_instant(text, what)


def period_or_range(period: str | None, start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """--period, or --from/--to, as (from, to) in canonical form (None where not given)."""
    if period is None:
        return when(start, "from"), when(end, "to")
    if start is not None or end is not None:
        raise ValidationError("period: give --period or --from/--to, not both")
    return parse_period(period)


class Interrupted(Exception):
    """Ctrl-C: the CLI prints this one line (what was written, if anything) and exits 130."""

    default = "interrupted: nothing was written"

    def __init__(self, message: str = default):
        super().__init__(message)


def is_interruption(exc: BaseException) -> bool:
    """Ctrl-C, as Python raises it or as DuckDB reports it when it stopped a query."""
    return (
        isinstance(exc, KeyboardInterrupt)
        or type(exc).__name__ == "InterruptException"
        or (isinstance(exc, RuntimeError) and str(exc) == "Query interrupted")
    )


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit non-zero."""
    typer.echo(f"Error: {scrub(message)}", err=True)  # never the password of a URL it quotes
    raise typer.Exit(code=code)


@contextmanager
def handled() -> Iterator[None]:
    """Turn every LedgerError (and I/O error) into one line on stderr and exit code 2."""
    try:
        yield
    except LedgerError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")


def db_url(ctx: typer.Context) -> str:
    obj = ctx.find_root().obj or {}
    return obj.get("db") or os.environ.get("ACCESS_LEDGER_DB") or "access-ledger.db"


def open_ledger(ctx: typer.Context, *, create: bool = False) -> AccessLedger:
    """Open the ledger named by --db / ACCESS_LEDGER_DB (a missing SQLite file is an error unless create)."""
    from ledger.app import AccessLedger

    return AccessLedger.open(db_url(ctx), create=create)


@contextmanager
def no_new_file_if_refused(ctx: typer.Context) -> Iterator[None]:
    """A SQLite ledger file this command would create is removed again when the command fails, so a
    refused import or init into a new path leaves nothing behind. Only a file that did not exist
    before and holds no event is removed (another process may have created it meanwhile)."""
    from ledger.store import parse_url

    try:
        path = parse_url(db_url(ctx)).get("SQLITE_DBNAME")
    except LedgerError:
        path = None  # a bad --db: the command says so itself
    fresh = path is not None and not path.startswith("file:") and not os.path.exists(path)
    try:
        yield
    except BaseException:
        if fresh and path is not None and _holds_no_event(path):
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    os.remove(path + suffix)
                except FileNotFoundError:
                    pass
        raise


def _holds_no_event(path: str) -> bool:
    """Does this SQLite file hold no event (read-only look; any doubt counts as holding some)?"""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0)
    except sqlite3.Error:
        return False
    try:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return "stored_events" not in tables or con.execute("SELECT 1 FROM stored_events LIMIT 1").fetchone() is None
    except sqlite3.Error:
        return False
    finally:
        con.close()


def default_actor(actor: str | None) -> str:
    if actor:
        return actor
    env = os.environ.get("ACCESS_LEDGER_ACTOR")
    if env:
        return env
    try:
        import getpass

        return f"user:{getpass.getuser()}"
    except Exception:  # no user name at all (e.g. a container with no passwd entry)
        return "system"


class UnknownActor(UnknownEntity):
    """A change command's --actor names no principal the ledger has ever recorded."""


ACTOR_KINDS = ("user", "service_account")


def check_actor(led: AccessLedger, actor: str) -> None:
    """Refuse an --actor that is neither `system` nor a user or service account the ledger has
    recorded (now or before: a deactivated one still is who it was). A change must name who made it
    as the ledger knows them, or the audit trail points at nobody; a typo would otherwise be
    recorded for ever. A malformed actor is left to the event's validation (its message is the one
    every writer gets)."""
    from ledger.errors import ValidationError
    from ledger.vocabulary import nfkc, split_principal

    if actor == "system" or not isinstance(actor, str):
        return
    try:
        kind, name = split_principal(nfkc(actor), "actor")
    except ValidationError:
        return
    if kind == "team":
        raise UnknownActor(f"actor: {actor!r} is a team; a change is made by a user or service account (or system)")
    from ledger.names import closest, recorded

    with led.store.transaction(write=False) as c:
        if recorded(c, kind, name):
            return
        close = closest(c, ACTOR_KINDS, f"{kind}:{name}", as_principal=True, with_kind=True)
    hint = f"closest: {', '.join(close)}" if close else "use system or a recorded user:NAME or service_account:NAME"
    raise UnknownActor(f"actor: unknown principal {actor!r} (never recorded in this ledger; {hint})")


def _cell(value: Any) -> str:
    from access_ledger.api import csv_cell

    return csv_cell(value)  # one rendering of a cell for every format, the service's CSV included


# What a markdown reader would take as markup (a link, emphasis, code, HTML, an entity, a cell's end):
# escaped, so a name or reason is shown as typed. An underscore inside a word is plain text already.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>&|~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def render(
    rows: Sequence[dict[str, Any]],
    fmt: Format,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
    scope: dict[str, Any] | None = None,
) -> str:
    """Render rows (dicts) as table, json, csv or markdown text. `scope` ({filters, text}) is what a filtered
    audit says of itself: markdown and a table say its text (JSON stays a list of rows; emit says it on stderr)."""
    cols = list(columns) if columns else (list(rows[0].keys()) if rows else [])
    if fmt is Format.json:  # a list of rows, filtered or not: scripts read it as one (emit says the scope)
        return json.dumps(list(rows), indent=2, default=str) + "\n"
    if fmt is Format.csv:
        from access_ledger.api import csv_text

        return csv_text(rows, cols)  # the service's CSV too
    if fmt is Format.markdown:

        def esc(s: str) -> str:
            return _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(), s).replace("\n", " ")

        lines = [f"### {esc(title)}", ""] if title else []
        if scope:
            lines += [f"**{esc(scope['text'])}**", ""]
        lines.append("| " + " | ".join(esc(c) for c in cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        lines += ["| " + " | ".join(esc(_cell(row.get(c))) for c in cols) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if scope:
        caption = scope["text"] + ("; " + caption if caption else "")
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths, total = _column_widths(
        [[c, *(r[i] for r in cells)] for i, c in enumerate(cols)], max(100, _terminal_width())
    )
    # Every string goes in as Text, which rich never parses: a name or reason `[/]` or `[b]otto` is data
    # (as a string it is markup: an error, or `otto` shown beside the real one), `:smile:` no emoji.
    table = Table(
        title=None if title is None else Text(title),
        caption=None if caption is None else Text(caption),
        show_lines=False,
    )
    for c, width in zip(cols, widths):
        table.add_column(Text(c), width=width, overflow="fold")
    for row_cells in cells:
        table.add_row(*(Text(cell) for cell in row_cells))
    buf = io.StringIO()
    Console(file=buf, width=total, force_terminal=False, markup=False, emoji=False, highlight=False).print(table)
    return buf.getvalue()


def _column_widths(columns: list[list[str]], room: int) -> tuple[list[int], int]:
    """Each column's width (its texts given) and the table's, so that no word is split across lines.

    A column is never narrower than its longest word: rich then wraps only at white space (never
    `pipeline:creat` / `e`). The width left over goes to the columns whose texts are longer than
    that, in proportion; when even the longest words do not fit, the table runs wider than `room`.
    """
    lows = [max((len(w) for text in texts for w in text.split()), default=1) for texts in columns]
    highs = [
        max(max((len(line) for text in texts for line in text.splitlines()), default=1), low)
        for texts, low in zip(columns, lows)
    ]
    frame = 3 * len(columns) + 1  # padding and a border per column, and the last border
    if sum(highs) + frame <= room:
        return highs, room
    spare = max(0, room - frame - sum(lows))
    wanted = sum(h - lo for h, lo in zip(highs, lows))
    widths = [lo + (h - lo) * spare // max(wanted, 1) for h, lo in zip(highs, lows)]
    return widths, max(room, sum(widths) + frame)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 160


def emit(
    rows: Sequence[dict[str, Any]],
    fmt: Format,
    out: Path | None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
    scope: dict[str, Any] | None = None,
) -> None:
    """Render and write to --out or stdout."""
    what = f"{len(rows):,} row{'' if len(rows) == 1 else 's'} as {fmt.value}"
    if scope:
        what += f" ({scope['text']})"
        if out is None and fmt in (Format.json, Format.csv):  # rows alone on stdout: the scope goes beside them
            typer.echo(scope["text"], err=True)
    emit_text(render(rows, fmt, columns, title, caption, scope), out, what)


def emit_text(text: str, out: Path | None, what: str | None = None) -> None:
    """Write to stdout, or to --out as an owner-only file (0600 whatever the umask), and say what was written."""
    if out is None:
        sys.stdout.write(text)
    else:
        write_private(out, text)
        size = len(text.encode("utf-8"))
        typer.echo(f"wrote {out}: {what or f'{size:,} bytes'}", err=True)
