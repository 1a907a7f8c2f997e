"""The audits (scope `audit`): each the call `access-ledger audit NAME` makes, with its parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from access_ledger import api
from access_ledger.server.deps import CSV_CONTENT, audit_token, caught_up, csv_response, service, wants_csv
from access_ledger.server.models import AuditAnswer, Problem
from access_ledger.server.service import Service

router = APIRouter(
    prefix="/v1",
    tags=["audits"],
    dependencies=[Depends(audit_token), Depends(caught_up)],
    responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 409: {"model": Problem}},
)


@router.get("/audits/{name}", response_model=AuditAnswer, responses={200: {"content": CSV_CONTENT}})
def audit(
    request: Request,
    name: Annotated[
        str, Path(description=f"One of {', '.join(api.AUDIT_OPTIONS)} (leavers needs an HR file: the CLI runs it).")
    ],
    at: Annotated[
        str | None,
        Query(description="review, least-privilege, sod, hygiene, reviews: the moment looked at (default now)."),
    ] = None,
    from_: Annotated[
        str | None, Query(alias="from", description="secrets, changes, hygiene, reviews: start of the period.")
    ] = None,
    to: Annotated[str | None, Query(description="End of the period (default now).")] = None,
    period: Annotated[str | None, Query(description="2026, 2026-03 or 2026-Q1 (not with from/to).")] = None,
    window: Annotated[str | None, Query(description="least-privilege: how far back use counts (90d).")] = None,
    principal: Annotated[str | None, Query(description="Only findings about this principal.")] = None,
    tenant: Annotated[
        str | None, Query(description="Only findings in this tenant (organization-wide ones are left out).")
    ] = None,
    connector: Annotated[str | None, Query(description="secrets: only this service connector.")] = None,
    role: Annotated[str | None, Query(description="review, least-privilege, secrets: only this role.")] = None,
    svc: Service = Depends(service),
) -> AuditAnswer | Response:
    """One audit's rows, every column (as `audit NAME --format json`), on the warehouse synced first."""
    with svc.ledger() as led:
        # The shipped separation-of-duties rules only: a rules file is a path on the service's machine.
        got = api.audit(
            led,
            name,
            None,
            at=at,
            start=from_,
            end=to,
            period=period,
            window=window,
            principal=principal,
            tenant=tenant,
            connector=connector,
            role=role,
        )
    if wants_csv(request):
        return csv_response(got["rows"], got["columns"], got["position"], got["link"])
    return AuditAnswer(**{k: v for k, v in got.items() if k != "result"})
