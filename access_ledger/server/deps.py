"""Dependencies the routers declare: the service, and a bearer token holding one of the router's scopes."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from access_ledger.server.service import Service
from projections.tokens import Token

# auto_error off: a missing token gets the ledger's own 401 body (which of missing/unknown/revoked/expired).
bearer = HTTPBearer(auto_error=False, description="A token from `access-ledger token create`.")
LOG_KEY = "access_ledger.log"  # the scope entry the access log reads the token id from


def service(request: Request) -> Service:
    return request.app.state.service


def token_with(*scopes: str) -> Callable[..., Token]:
    """A dependency admitting a token that may be used now and holds one of `scopes`."""

    def dependency(request: Request,
                   credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Token:
        from ledger.timeutil import format_instant, now

        presented = credentials.credentials if credentials is not None else None
        token = service(request).authenticate(presented, scopes, format_instant(now()))
        request.scope.get(LOG_KEY, {})["token_id"] = token.token_id
        return token

    dependency.__name__ = f"token_with_{'_or_'.join(scopes)}"
    return dependency


# One dependency object per scope set: declared on a router and asked for again by an endpoint, it runs once.
read_token = token_with("read")
feed_token = token_with("read", "audit")
report_token = token_with("report")
any_token = token_with("report", "change", "read", "audit", "review", "admin")
