"""serve: the ledger as an HTTP service (FastAPI on uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from access_ledger.cli.common import db_url, fail
from access_ledger.server.limits import REQUEST_TIMEOUT


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
    rate_limit: Annotated[
        str | None,
        typer.Option(
            "--rate-limit",
            help="Requests per token, N/s or N/m (429 with Retry-After beyond it); counted per worker process.",
        ),
    ] = None,
    request_timeout: Annotated[
        float,
        typer.Option("--request-timeout", help="Seconds until a request not yet answered gets 503.", min=0.1),
    ] = REQUEST_TIMEOUT,
    shutdown_timeout: Annotated[
        float,
        typer.Option("--shutdown-timeout", help="Seconds SIGTERM waits for requests in flight to finish.", min=0),
    ] = 30.0,
    sync_zenml: Annotated[
        str | None, typer.Option("--sync-zenml", help="Also record this ZenML server as it changes (sync zenml).")
    ] = None,
    zenml_username: Annotated[str, typer.Option("--zenml-username", help="Its admin user.")] = "admin",
    zenml_password_env: Annotated[
        str | None, typer.Option("--zenml-password-env", help="The variable holding its password (else a prompt).")
    ] = None,
    zenml_tenant: Annotated[str, typer.Option("--zenml-tenant", help="The tenant it is recorded as.")] = "zenml",
    zenml_interval: Annotated[str, typer.Option("--zenml-interval", help="How often to sync it.")] = "60s",
) -> None:
    """Answer the ledger's questions and record events over HTTP, for holders of tokens (`token create`)."""
    import os

    import uvicorn

    url = db or db_url(ctx)
    from access_ledger.server.limits import parse_rate

    try:
        rate = parse_rate(rate_limit) if rate_limit is not None else None
    except ValueError as exc:
        fail(f"--rate-limit: {exc}")
    from ledger.app import AccessLedger
    from ledger.errors import LedgerError

    try:
        AccessLedger.open(url).close()  # a missing or unreadable ledger: one line now, not on the first request
    except LedgerError as exc:
        fail(str(exc))
    from access_ledger.server.app import configure_logging

    configure_logging()
    stop_sync = None
    if sync_zenml is not None:
        from access_ledger.cli.sync import interval_seconds, password_from
        from access_ledger.zenml import background

        try:
            every = interval_seconds(zenml_interval) or 60.0
            password = password_from(zenml_password_env, zenml_username)
            stop_sync = background.start(url, sync_zenml, zenml_username, password, zenml_tenant, every)
        except LedgerError as exc:
            fail(str(exc))
    # The workers build the app from the environment (uvicorn imports it by name in each of them).
    os.environ["ACCESS_LEDGER_SERVE_DB"] = url
    os.environ["ACCESS_LEDGER_SERVE_RATE"] = repr(rate) if rate is not None else ""
    os.environ["ACCESS_LEDGER_SERVE_TIMEOUT"] = repr(request_timeout)
    uvicorn.run(
        "access_ledger.server.main:app" if workers > 1 else _app(url, rate, request_timeout),
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=shutdown_timeout,  # SIGTERM: stop accepting, let requests in flight finish
        # (then close what is left: an open change feed never ends by itself)
        # uvicorn restarts a worker that does not answer its ping in time: on a busy machine a worker still
        # importing, or one holding the GIL through a large batch, takes longer than uvicorn's 5 s.
        timeout_worker_healthcheck=60,
    )
    if stop_sync is not None:
        stop_sync.set()


def _app(url: str, rate: float | None, request_timeout: float):
    from access_ledger.server import create_app

    return create_app(url, rate_limit=rate, request_timeout=request_timeout)
