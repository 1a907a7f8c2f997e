"""The FastAPI application: routers, failures as one-line bodies, a request size limit, and an access log
that names the token id of each request (never the token)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI

from access_ledger.server import errors
from access_ledger.server.deps import LOG_KEY
from access_ledger.server.lean import LeanPaths
from access_ledger.server.limits import REQUEST_TIMEOUT, RateLimiter, RequestTimeout
from access_ledger.server.routers import (
    audits,
    evidence,
    feed,
    findings,
    health,
    meta,
    ops,
    questions,
    report,
    stream,
    write,
)
from access_ledger.server.service import Service

MAX_BODY = 32 * 1024 * 1024  # bytes of one request body (a JSONL batch of some 100,000 events)


def configure_logging() -> None:
    """Log lines on stderr (each worker process of `serve --workers N` calls this too)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def create_app(
    db: str, *, max_body: int = MAX_BODY, rate_limit: float | None = None, request_timeout: float = REQUEST_TIMEOUT
) -> FastAPI:
    """The service for the ledger at `db` (a SQLite path or a postgresql:// URL); `rate_limit` is requests per
    second per token (None: unlimited), `request_timeout` seconds until a request not yet answered gets 503."""
    from importlib.metadata import version

    svc = Service(db)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        svc.close()

    app = FastAPI(
        title="access-ledger",
        version=version("access-ledger"),
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        description="Who could do what, when: the ledger's answers and its log over HTTP. Every "
        "path but /healthz and /readyz needs `Authorization: Bearer TOKEN` "
        "(`access-ledger token create`).",
    )
    app.state.service = svc
    app.state.limiter = RateLimiter(rate_limit) if rate_limit else None
    for module in (health, meta, questions, feed, stream, report, audits, evidence, write, findings, ops):
        app.include_router(module.router)
    errors.install(app, max_body)
    from access_ledger import web

    web.install(app)  # the reviewers' pages (their own package)
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(RequestTimeout, seconds=request_timeout)
    app.add_middleware(AccessLog)
    # Outermost: the hot paths are answered before any of the above (each of which it does itself, leaner).
    app.add_middleware(LeanPaths, api=app, max_body=max_body, seconds=request_timeout)
    return app


class BodyLimit:
    """Refuse a request body beyond `limit` bytes (413), by its Content-Length or as it arrives."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            from fastapi.responses import JSONResponse

            response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise errors.BodyTooLarge()
            return message

        await self.app(scope, limited, send)


class AccessLog:
    """One line per request: client, method, path, status, token id (or -), duration."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        noted: dict[str, str] = {}
        scope[LOG_KEY] = noted
        status = 500
        start = time.perf_counter()

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            errors.log_access(scope, status, noted.get("token_id", "-"), start)
