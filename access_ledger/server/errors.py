"""How failures become responses: one line each, never a stack trace (the log gets the trace of a 500)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from access_ledger.server.limits import RateLimited
from access_ledger.server.service import NotCaughtUp
from ledger.errors import IntegrityFailure, LedgerError, StorageError
from projections.tokens import TokenRefused

log = logging.getLogger("access_ledger.server")


class BodyTooLarge(Exception):
    """A request body beyond the service's limit."""


def one_line(exc: BaseException | str) -> str:
    from ledger.private import scrub

    return scrub(" ".join(str(exc).split()))  # a message may quote a --db URL: never its password


def install(app: FastAPI, max_body: int) -> None:
    @app.exception_handler(TokenRefused)
    async def refused(request: Request, exc: TokenRefused) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else None
        return JSONResponse({"detail": one_line(exc), "error": exc.reason}, status_code=exc.status, headers=headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": f"request body larger than {max_body} bytes"}, status_code=413)

    @app.exception_handler(RateLimited)
    async def too_many(request: Request, exc: RateLimited) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(NotCaughtUp)
    async def behind(request: Request, exc: NotCaughtUp) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc)}, status_code=409)

    @app.exception_handler(LedgerError)
    async def refused_by_ledger(request: Request, exc: LedgerError) -> JSONResponse:
        if isinstance(exc, (StorageError, IntegrityFailure)):
            log.error("%s %s: %s", request.method, request.url.path, one_line(exc))
            return JSONResponse({"detail": one_line(exc)}, status_code=503)
        return JSONResponse({"detail": one_line(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the service's log has the details"}, status_code=500
        )
