"""How failures become responses: one line each, never a stack trace (the log gets the trace of a 500)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

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


def response_for(exc: Exception, method: str, path: str, max_body: int) -> JSONResponse:
    """The answer to a request that raised `exc`: one line, the status its kind calls for (every path's)."""
    if isinstance(exc, TokenRefused):
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else None
        return JSONResponse({"detail": one_line(exc), "error": exc.reason}, status_code=exc.status, headers=headers)
    if isinstance(exc, BodyTooLarge):
        return JSONResponse({"detail": f"request body larger than {max_body} bytes"}, status_code=413)
    if isinstance(exc, RateLimited):
        return JSONResponse({"detail": one_line(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, NotCaughtUp):
        return JSONResponse({"detail": one_line(exc)}, status_code=409)
    if isinstance(exc, ClientDisconnect):
        # The client went away before its body was whole (a load generator ending its run, a client giving up):
        # nothing was read, so nothing was written; the client's doing, not a failure of the service.
        log.info("%s %s: the client disconnected before its body was whole", method, logged_path(path))
        return JSONResponse({"detail": "the client disconnected before sending its whole body"}, status_code=400)
    if isinstance(exc, LedgerError):
        if isinstance(exc, (StorageError, IntegrityFailure)):
            log.error("%s %s: %s", method, logged_path(path), one_line(exc))
            return JSONResponse({"detail": one_line(exc)}, status_code=503)
        return JSONResponse({"detail": one_line(exc)}, status_code=400)
    log.error("%s %s failed", method, logged_path(path), exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the service's log has the details"}, status_code=500
    )


def install(app: FastAPI, max_body: int) -> None:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return response_for(exc, request.method, request.url.path, max_body)

    for kind in (TokenRefused, BodyTooLarge, RateLimited, NotCaughtUp, LedgerError, ClientDisconnect, Exception):
        app.add_exception_handler(kind, handler)

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if _not_json(request.headers.get("content-type")) and any(_on_body(e) for e in errors):
            # `curl -d '{...}'` without `-H 'Content-Type: application/json'` sends a form: FastAPI reads no JSON
            # then, and its 422 would quote the body back as a string without saying why.
            return JSONResponse({"detail": NOT_JSON}, status_code=415)
        # FastAPI's own 422, but a body's NaN or Infinity (which its JSON reader takes) is echoed as text:
        # as a number it cannot be encoded, and the 422 became a 500.
        return JSONResponse({"detail": _finite(jsonable_encoder(errors))}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)


NOT_JSON = "the request body must be JSON, sent with the header Content-Type: application/json"


def _not_json(content_type: str | None) -> bool:
    """True for a content type FastAPI does not read as JSON (nor a missing one: its routes are strict)."""
    if not content_type:
        return True
    kind = content_type.split(";")[0].strip().lower()
    return not (kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")))


def _on_body(error: Any) -> bool:
    loc = error.get("loc") if isinstance(error, dict) else None
    return bool(loc) and loc[0] == "body"


def _finite(value: Any) -> Any:
    """`value` (lists, dicts, scalars) with every non-finite float given as its text (nan, inf, -inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


access_log = logging.getLogger("access_ledger.access")


def logged_path(path: str) -> str:
    """A request's path for a log line, %-escaped: decoded, it may hold a newline, a space or an ESC (a line or
    a field of the caller's choosing)."""
    return quote(path, safe="/!$&'()*+,;=:@-._~")


def log_access(scope: dict[str, Any], status: int, token_id: str, start: float) -> None:
    """One access-log line: the path only (a query string holds what clients ask about, and no credential
    belongs there) and the token's id, never the token."""
    client = scope.get("client") or ("-", 0)
    access_log.info(
        "%s:%s %s %s %d token=%s %.1fms",
        client[0],
        client[1],
        scope["method"],
        logged_path(scope["path"]),
        status,
        token_id,
        (time.perf_counter() - start) * 1000,
    )
