"""/healthz and /readyz: the only paths that need no token."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from access_ledger.server.deps import service
from access_ledger.server.models import Health, Problem, Ready
from access_ledger.server.service import Service

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, responses={503: {"model": Problem}})
def readyz(svc: Service = Depends(service)) -> Ready | JSONResponse:
    """The ledger can be read: its head, checked against the head event."""
    from access_ledger.server.errors import one_line

    try:
        with svc.ledger() as led:
            position, _, link = led.store.head()
    except Exception as exc:  # noqa: BLE001 - not ready, for whatever reason: said in one line
        return JSONResponse({"detail": f"not ready: {one_line(exc)}"}, status_code=503)
    return Ready(status="ready", position=position, link=link)
