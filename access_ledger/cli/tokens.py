"""token create|revoke|list: the service's bearer tokens, issued and revoked as events in the chain."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from access_ledger.cli.common import (
    ActorOption,
    Format,
    FormatOption,
    OutOption,
    ReasonOption,
    check_actor,
    default_actor,
    emit,
    handled,
    open_ledger,
    when,
)
from ledger.timeutil import CLI_TIME_HELP
from ledger.tokens import TOKEN_SCOPES

token_app = typer.Typer(help="Create, revoke and list the tokens that let clients use `serve`.", no_args_is_help=True)
Scope = Enum("Scope", {s: s for s in TOKEN_SCOPES}, type=str)  # type: ignore[misc]


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    principal: Annotated[
        str,
        typer.Option("--for", help="The token's principal: service_account:NAME or user:NAME (recorded and active)."),
    ],
    scope: Annotated[
        list[Scope],
        typer.Option("--scope", help="What it may do (repeat for several): " + ", ".join(TOKEN_SCOPES) + "."),
    ],
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help=f"Unusable from then on: {CLI_TIME_HELP}.")
    ] = None,
    actor: ActorOption = None,
    reason: ReasonOption = None,
) -> None:
    """Issue a token and print it, once: only its SHA-256 is recorded, so it cannot be shown again."""
    from access_ledger import api

    with handled():
        expires = when(expires_at, "expires_at")
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            issued = api.create_token(led, principal, [s.value for s in scope], expires, actor=who, reason=reason)
        finally:
            led.close()
    typer.echo(
        f"token {issued['token_id']} for {principal} recorded at position {issued['position']}; it is shown only now:",
        err=True,
    )
    typer.echo(issued["token"])


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_...).")],
    actor: ActorOption = None,
    reason: ReasonOption = None,
) -> None:
    """Revoke a token: the service refuses it from now on."""
    from access_ledger import api

    with handled():
        led = open_ledger(ctx)
        try:
            who = default_actor(actor)
            check_actor(led, who)
            position = api.revoke_token(led, token_id, actor=who, reason=reason)
        finally:
            led.close()
    typer.echo(f"recorded at position {position}")


@token_app.command("list")
def token_list(ctx: typer.Context, fmt: FormatOption = Format.table, out: OutOption = None) -> None:
    """Every token ever issued, with its principal, scopes and status now (never a secret)."""
    from access_ledger import api

    with handled():
        led = open_ledger(ctx)
        try:
            got = api.list_tokens(led)
        finally:
            led.close()
        emit(
            got["rows"],
            fmt,
            out,
            [
                "token_id",
                "principal",
                "scopes",
                "status",
                "expires_at",
                "issued_at",
                "issued_by",
                "position",
                "revoked_at",
                "reason",
            ],
            title=f"tokens at {got['at']} (position {got['position']})",
        )
