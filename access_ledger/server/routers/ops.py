"""The caller's own token (any scope): `GET /v1/whoami`, also the cheapest authenticated answer (the floor the
benchmark measures the questions against)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from access_ledger.server.deps import any_token, service
from access_ledger.server.models import Problem, WhoAmI
from access_ledger.server.service import Service
from projections.tokens import Token

router = APIRouter(
    prefix="/v1",
    tags=["tokens"],
    responses={401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}},
)


@router.get("/whoami", response_model=WhoAmI)
def whoami(token: Token = Depends(any_token), svc: Service = Depends(service)) -> WhoAmI:
    """The token presented: its id, principal, scopes and expiry (never its secret or hash)."""
    return whoami_answer(svc, token)


def whoami_answer(svc: Service, token: Token) -> WhoAmI:
    """The answer of `GET /v1/whoami` (also given by the service's lean path, server/lean.py)."""
    position, link = svc.tokens_as_of()
    return WhoAmI(
        token_id=token.token_id,
        principal=token.principal,
        scopes=list(token.scopes),
        expires_at=token.expires_at,
        position=position,
        link=link,
    )
