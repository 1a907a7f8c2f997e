"""The access-ledger command line: the one composition root wiring ledger, projections and reports."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

# No pydantic plugins are used; without this, pydantic scans every installed package's entry
# points on first use, a sizeable part of a change command's start-up.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from access_ledger.cli.common import Interrupted, is_interruption  # noqa: E402
from ledger.errors import LedgerError  # noqa: E402


class LedgerGroup(TyperGroup):
    """Every failure, including usage errors, ends as one line on stderr and a non-zero exit."""

    def invoke(self, ctx: Any) -> Any:
        # Typer turns Ctrl-C into a silent exit 130, and DuckDB into its own error mid-query: say it.
        try:
            return super().invoke(ctx)
        except Interrupted:
            raise
        except BaseException as exc:
            if is_interruption(exc):
                raise Interrupted() from None
            raise

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Error: aborted", err=True)
            sys.exit(130)
        except LedgerError as exc:
            typer.echo(f"Error: {_one_line(str(exc))}", err=True)
            sys.exit(2)
        except (KeyboardInterrupt, Interrupted) as exc:
            typer.echo(str(exc) if isinstance(exc, Interrupted) else Interrupted.default, err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)
        except Exception as exc:  # the promise: never a traceback
            if type(exc).__name__ == "NoArgsIsHelpError":  # a group named alone: its help, as typer shows it
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # typer's (vendored click's) usage errors
                typer.echo(f"Error: {_one_line(exc.format_message())}", err=True)
                sys.exit(exc.exit_code)
            typer.echo(f"Error: unexpected {type(exc).__name__}: {_one_line(str(exc))}", err=True)
            sys.exit(3)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(text: str) -> str:
    from ledger.private import scrub

    return scrub(" ".join(text.split()))  # an error may quote a --db URL: never its password


app = typer.Typer(
    cls=LedgerGroup,
    help="An event-sourced access-control ledger with audit reporting.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"access-ledger {version('access-ledger')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLite file or postgresql://user:pass@host:port/db "
            "(default: $ACCESS_LEDGER_DB, else ./access-ledger.db).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Record every access-control change as an immutable, verifiable event; ask who could do what, when."""
    ctx.obj = {"db": db}


def _register() -> None:
    from access_ledger.cli import write

    write.register(app)
    for name in (
        "access_ledger.cli.queries",
        "access_ledger.cli.audit",
        "access_ledger.cli.evidence",
        "access_ledger.cli.keys",
        "access_ledger.cli.review",
        "access_ledger.cli.demo",
        "access_ledger.cli.tokens",
        "access_ledger.cli.serve",
        "access_ledger.cli.vocabulary",
        "access_ledger.cli.history",
        "access_ledger.cli.sync",
        "access_ledger.cli.findings",
    ):
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register()


def _invoked(args: list[str]) -> str | None:
    """The top-level command or group named on the command line (after the global options)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--db":
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg
    return None


def _only(name: str | None) -> None:
    """Keep only the invoked command or group in the app (when it names one).

    Typer builds every registered command, with its parameters, before it runs one; a change
    command need not pay for the other forty-odd. `--help` and unknown names keep them all.
    """
    if name is None or "--help" in sys.argv:
        return
    groups = [g for g in app.registered_groups if g.name == name]
    commands = [c for c in app.registered_commands if c.name == name]
    if groups or commands:
        app.registered_groups[:] = groups
        app.registered_commands[:] = commands


def main() -> None:
    _only(_invoked(sys.argv[1:]))
    app()
