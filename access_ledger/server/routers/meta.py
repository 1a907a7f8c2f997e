"""The service's own description: /openapi.json, for any valid token (only /healthz and /readyz need none)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from access_ledger.server.deps import any_token

router = APIRouter(tags=["meta"], dependencies=[Depends(any_token)])


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()
