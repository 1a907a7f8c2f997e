"""sync zenml: record a ZenML server's users, service accounts, API keys, connectors and projects as they change."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from access_ledger.cli.common import fail, handled, no_new_file_if_refused, open_ledger

sync_app = typer.Typer(
    help="Record an outside system's access state in the ledger as it changes.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(sync_app, name="sync")


def password_from(env: str | None, username: str) -> str:
    """The password from the environment variable named, else a prompt (never from an argument)."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            fail(f"--password-env: the environment variable {env} is not set (or empty)")
        return value
    if not sys.stdin.isatty():
        fail("give --password-env VAR (no terminal to ask for the password on)")
    return typer.prompt(f"password of {username}", hide_input=True)


def interval_seconds(text: str | None) -> float | None:
    from ledger.timeutil import parse_duration

    return None if text is None else parse_duration(text, "--interval").total_seconds()


def summary(result: object) -> str:
    """One line: the server, the tenant, what was recorded."""
    from access_ledger.zenml.sync import SyncResult

    assert isinstance(result, SyncResult)
    head = f"sync zenml {result.url} into tenant {result.tenant!r}:"
    refused = f"; {len(result.refused)} refused" if result.refused else ""
    if not result.recorded:
        return (
            f"{head} nothing changed, nothing recorded ({result.seconds:.1f} s, "
            f"{result.server_seconds:.1f} s of it reading the server){refused}"
        )
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.counts.items()))
    return (
        f"{head} recorded {result.recorded} events at positions {result.first}-{result.last} "
        f"({kinds}) in {result.seconds:.1f} s ({result.server_seconds:.1f} s reading the server){refused}"
    )


def _with_status(syncer: object, url: str) -> object:
    """One sync; on a terminal, a spinner on stderr says what it is doing meanwhile."""
    if not sys.stderr.isatty():
        return syncer.once()  # type: ignore[attr-defined]
    from rich.console import Console

    with Console(stderr=True).status(f"sync zenml {url}: reading the server and the ledger"):
        return syncer.once()  # type: ignore[attr-defined]


@sync_app.command("zenml")
def sync_zenml(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="The ZenML server, e.g. http://127.0.0.1:8237.")],
    username: Annotated[str, typer.Option("--username", help="An admin user of the server.")] = "admin",
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", help="The environment variable holding the password (else a prompt)."),
    ] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the server is recorded as.")] = "zenml",
    interval: Annotated[
        str | None, typer.Option("--interval", help="Keep syncing at this interval (60s, 5min) until stopped.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object a sync instead of a line.")] = False,
) -> None:
    """Compare a ZenML server with the ledger and record the differences (actor system), in one transaction."""
    import json
    import threading

    from access_ledger.zenml.client import ZenMLClient
    from access_ledger.zenml.sync import Syncer, loop

    with handled():
        every = interval_seconds(interval)
        password = password_from(password_env, username)
        with no_new_file_if_refused(ctx):
            led = open_ledger(ctx, create=True)
            try:
                client = ZenMLClient(url)
                try:
                    client.login(username, password)
                    syncer = Syncer(led, client, tenant)

                    def show(result: object) -> None:
                        if isinstance(result, Exception):
                            typer.echo(f"Error: sync zenml {client.url}: {result}", err=True)
                            return
                        # What the ledger refused is said on every sync (a cron job mails it) but does not fail
                        # it: the rest is recorded, and a name that is refused today would fail every run.
                        for line in result.refused:  # type: ignore[attr-defined]
                            typer.echo(f"Warning: sync zenml {client.url}: {line}", err=True)
                        if json_out:
                            typer.echo(json.dumps(result.as_dict()))  # type: ignore[attr-defined]
                        else:
                            typer.echo(summary(result))

                    if every is None:
                        show(_with_status(syncer, client.url))
                        return
                    stop = threading.Event()
                    try:
                        loop(syncer, every, show, stop)
                    except KeyboardInterrupt:
                        stop.set()
                        typer.echo(f"sync zenml {client.url}: stopped", err=True)
                finally:
                    client.close()
            finally:
                led.close()
