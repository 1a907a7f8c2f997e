"""serve: the ledger as an HTTP service (FastAPI on uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from access_ledger.cli.common import db_url, fail

SHUTDOWN_GRACE = 10  # seconds


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option("--db", help="The ledger (default: the global --db, $ACCESS_LEDGER_DB, else ./access-ledger.db)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=0, max=65535)] = 8080,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.", min=1)] = 1,
) -> None:
    """Answer the ledger's questions and record events over HTTP, for holders of tokens (`token create`)."""
    import os

    import uvicorn

    url = db or db_url(ctx)
    from ledger.app import AccessLedger
    from ledger.errors import LedgerError

    try:
        AccessLedger.open(url).close()  # a missing or unreadable ledger: one line now, not on the first request
    except LedgerError as exc:
        fail(str(exc))
    from access_ledger.server.app import configure_logging

    configure_logging()
    # The workers build the app from the environment (uvicorn imports it by name in each of them).
    os.environ["ACCESS_LEDGER_SERVE_DB"] = url
    uvicorn.run(
        "access_ledger.server.main:app" if workers > 1 else _app(url),
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        server_header=False,
        # In-flight requests get this long to finish after SIGTERM; then connections are closed. Without it an
        # open change feed (which never ends by itself) would keep the service from stopping at all.
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )


def _app(url: str):
    from access_ledger.server import create_app

    return create_app(url)
