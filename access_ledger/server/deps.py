"""Dependencies the routers declare: the service, and a bearer token holding one of the router's scopes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from access_ledger.server.service import Seen, Service
from ledger.tokens import TOKEN_SCOPES
from projections.tokens import Token

# auto_error off: a missing token gets the ledger's own 401 body (which of missing/unknown/revoked/expired).
bearer = HTTPBearer(auto_error=False, description="A token from `access-ledger token create`.")
LOG_KEY = "access_ledger.log"  # the scope entry the access log reads the token id from


def service(request: Request) -> Service:
    return request.app.state.service


def token_with(*scopes: str) -> Callable[..., Token]:
    """A dependency admitting a token that may be used now and holds one of `scopes`."""

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Token:
        from ledger.timeutil import format_instant, now

        presented = credentials.credentials if credentials is not None else None
        token, request.state.seen = service(request).authenticated(presented, scopes, format_instant(now()))
        request.scope.get(LOG_KEY, {})["token_id"] = token.token_id
        limiter = getattr(request.app.state, "limiter", None)
        if limiter is not None:
            limiter.admit(token.token_id)  # after authentication: only a token's holder spends its requests
        return token

    dependency.__name__ = f"token_with_{'_or_'.join(scopes)}"
    return dependency


# One dependency object per scope set: declared on a router and asked for again by an endpoint, it runs once.
read_token = token_with("read")
feed_token = token_with("read", "audit")
report_token = token_with("report")
any_token = token_with(*TOKEN_SCOPES)
audit_token = token_with("audit")


def caught_up(
    request: Request,
    min_position: Annotated[
        int | None,
        Query(
            ge=0,
            description="Wait (at most 5 s, else 409) until the ledger holds this position: a write's "
            "position, made through another worker.",
        ),
    ] = None,
) -> None:
    """A read waits for the log to reach min_position (declared after the token, so 401/403 come first)."""
    if min_position is not None:
        service(request).wait_for(min_position)
        request.state.seen = None  # the head the token was checked at may be before min_position: read it again


def seen(request: Request) -> Seen | None:
    """The head this request's token check read (None: read it again), for `Service.ledger`."""
    return getattr(request.state, "seen", None)


def wants_csv(request: Request) -> bool:
    """True when the Accept header asks for text/csv (a table answer is then sent as CSV)."""
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


def csv_response(rows: Any, columns: Any, position: int, link: str) -> Response:
    """Rows as formula-safe CSV (as the CLI's --format csv), the position and link in headers."""
    from access_ledger import api

    return Response(
        api.csv_text(rows, columns),
        media_type="text/csv; charset=utf-8",
        headers={"X-Ledger-Position": str(position), "X-Ledger-Link": link},
    )


#: How a table answer's CSV form is described in /openapi.json.
CSV_CONTENT = {
    "text/csv": {
        "schema": {"type": "string"},
        "description": "With `Accept: text/csv`: the rows as "
        "CSV (formula-safe); X-Ledger-Position and X-Ledger-Link give where it stands.",
    }
}
