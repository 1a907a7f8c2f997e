"""The questions (scope `read`): check, who-can, what-can, explain; each the call `access-ledger` makes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response

from access_ledger import api
from access_ledger.server.deps import CSV_CONTENT, caught_up, csv_response, read_token, seen, service, wants_csv
from access_ledger.server.models import (
    BatchAnswer,
    BatchAnswers,
    CheckAnswer,
    Diff,
    Problem,
    Question,
    WhatCan,
    WhoCan,
)
from access_ledger.server.service import Seen, Service

router = APIRouter(
    prefix="/v1",
    tags=["questions"],
    dependencies=[Depends(read_token), Depends(caught_up)],
    responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 409: {"model": Problem}},
)

Tenant = Annotated[str | None, Query(description="The tenant (omit for organization resources).")]
At = Annotated[str | None, Query(description="Answer as of this instant (default now), as the CLI's --at.")]
Position = Annotated[int | None, Query(ge=0, description="Answer as of this log position (not with at).")]


@router.post("/check", response_model=CheckAnswer | BatchAnswers)
def check(
    request: Request, questions: Annotated[Question | list[Question], Body()], svc: Service = Depends(service)
) -> CheckAnswer | BatchAnswers:
    """One question: allowed or not, with its paths or why not. A list: one answer each, as `check --batch`."""
    return check_answer(svc, seen(request), questions)


def check_answer(svc: Service, seen: Seen | None, questions: Question | list[Question]) -> CheckAnswer | BatchAnswers:
    """The answer of `POST /v1/check` (also given by the service's lean path, server/lean.py)."""
    with svc.ledger(seen) as led:
        if isinstance(questions, Question):
            q = questions
            return CheckAnswer(**api.check(led, q.principal, q.action, q.resource, q.tenant, q.at, q.position))
        asked = [api.question(q.model_dump(exclude_none=True), n) for n, q in enumerate(questions, 1)]
        answers = api.check_batch(led, asked)
        links = {p: api.link_at(led, p) for p in {a["_position"] for a in answers}}
    return BatchAnswers(
        answers=[
            BatchAnswer(
                question={k: v for k, v in a.items() if not k.startswith("_") and k != "allowed"},
                allowed=a["allowed"],
                position=a["_position"],
                link=links[a["_position"]],
            )
            for a in answers
        ]
    )


@router.get("/who-can", response_model=WhoCan, responses={200: {"content": CSV_CONTENT}})
def who_can(
    request: Request,
    action: str,
    resource: str,
    tenant: Tenant = None,
    at: At = None,
    position: Position = None,
    svc: Service = Depends(service),
) -> WhoCan | Response:
    """Every user and service account allowed ACTION on RESOURCE, and through what."""
    with svc.ledger(seen(request)) as led:
        got = api.who_can(led, action, resource, tenant, at, position)
    if wants_csv(request):
        return csv_response(got["rows"], api.WHO_CAN_COLUMNS, got["position"], got["link"])
    return WhoCan(**got)


@router.get("/what-can", response_model=WhatCan, responses={200: {"content": CSV_CONTENT}})
def what_can(
    request: Request,
    principal: str,
    tenant: Tenant = None,
    at: At = None,
    position: Position = None,
    svc: Service = Depends(service),
) -> WhatCan | Response:
    """Every permission PRINCIPAL holds (per tenant and in the organization), and through what."""
    with svc.ledger(seen(request)) as led:
        got = api.what_can(led, principal, tenant, at, position)
    if wants_csv(request):
        return csv_response(got["rows"], api.WHAT_CAN_COLUMNS, got["position"], got["link"])
    return WhatCan(**got)


@router.get("/explain", response_model=CheckAnswer)
def explain(
    request: Request,
    principal: str,
    action: str,
    resource: str,
    tenant: Tenant = None,
    at: At = None,
    position: Position = None,
    svc: Service = Depends(service),
) -> CheckAnswer:
    """Every path principal -> team -> role -> base role -> permission, each link with its event."""
    with svc.ledger(seen(request)) as led:
        return CheckAnswer(**api.check(led, principal, action, resource, tenant, at, position))


@router.get("/diff", response_model=Diff, response_model_by_alias=True, responses={200: {"content": CSV_CONTENT}})
def diff(
    request: Request,
    from_: Annotated[str, Query(alias="from", description="The earlier instant, as the CLI's --from.")],
    to: Annotated[str | None, Query(description="The later instant (default now), as the CLI's --to.")] = None,
    svc: Service = Depends(service),
) -> Diff | Response:
    """Permissions gained and lost per principal between two instants, with the events behind each (as `diff`)."""
    with svc.ledger() as led:  # two instants, each found by its own read of the head
        got = api.diff(led, from_, to)
    if wants_csv(request):
        return csv_response(api.diff_table(got["rows"]), api.DIFF_COLUMNS, got["position"], got["link"])
    return Diff(**got)
