"""`access-ledger keys create`: an Ed25519 key pair for signing seals, digests and evidence manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from access_ledger.cli.common import handled

keys_app = typer.Typer(
    help="Signing keys: seals, digests and evidence bundles anyone can check with the public key.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for signing.key and signing.pub (created owner-only).")
    ],
) -> None:
    """Write a new Ed25519 key pair: DIR/signing.key (owner-only; name it in $ACCESS_LEDGER_SIGNING_KEY) and
    DIR/signing.pub (give it to auditors: `evidence verify --public-key`)."""
    from ledger.signing import SIGNING_ENV, create_keys

    with handled():
        key, pub = create_keys(out)
    typer.echo(f"wrote {key} (private, owner-only) and {pub} (public)")
    typer.echo(f"sign with: export {SIGNING_ENV}={key}")
