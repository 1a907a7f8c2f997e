"""Triage of audit findings over HTTP: accept, suppress, suppression rules, reopen (scope `change`), and the
list of findings with their state (scope `read` or `audit`); the same functions as `access-ledger finding`.

A decision is made by the token's principal, now: a body naming `actor` or `at` is refused (403 `actor`).
The ledger holds every decision to the authority rules (member:update in the organization) and refuses a
decision about the principal's own finding or one its own change caused (403 `authority`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from access_ledger import api, triage
from access_ledger.server.deps import caught_up, feed_token
from access_ledger.server.models import Problem
from access_ledger.server.routers.write import _as, _forbidden, _json, _problem, change_token
from ledger.errors import ValidationError
from projections.tokens import Token

router = APIRouter(
    prefix="/v1",
    tags=["findings"],
    responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 413: {"model": Problem}},
)
FindingId = Annotated[str, Path(description="The finding's id (F- and 16 hex digits, an audit's finding_id).")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Decide(_Body):
    reason: str = Field(min_length=1, description="Why (a ticket, a justification).")
    until: str | None = Field(default=None, description="The decision lapses then (ISO-8601, a date, +90d, ...).")


class Reopen(_Body):
    reason: str = Field(min_length=1)


class Rule(_Body):
    rule: str = Field(examples=["hygiene/self-grant"], description="AUDIT/KIND: the kind of finding suppressed.")
    principal: str = Field(examples=["user:zoe"], description="The principal whose findings of that kind go.")
    tenant: str | None = Field(default=None, description="Only in this tenant (default: anywhere).")
    reason: str = Field(min_length=1)
    until: str | None = None


class Decided(BaseModel):
    finding_id: str
    state: Literal["accepted", "suppressed"]
    audit: str
    kind: str
    principal: str | None
    scope: str | None
    until: str | None
    position: int


class RuleAdded(BaseModel):
    rule: str
    position: int


class Reopened(BaseModel):
    reopened: str
    position: int


class Findings(BaseModel):
    position: int
    link: str
    rows: list[dict[str, Any]]


def _body(raw: bytes, model: type[_Body], actor: str) -> Any:
    """The request's JSON as `model`; naming the actor or the time is refused, never rewritten."""
    data = _json(raw)
    if isinstance(data, dict):
        for field in ("actor", "at"):
            if field in data:
                raise api.ActorNamed(
                    f"{field}: a triage decision is made by the token's principal ({actor}), now: "
                    f"the request may not name its {'actor' if field == 'actor' else 'time'}"
                )
    try:
        return model.model_validate(data)
    except PydanticError as exc:
        raise ValidationError(f"body: {_problem(exc)}") from None


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def _decide(finding_id: str, request: Request, token: Token, accept: bool) -> Any:
    from ledger.timeutil import cli_instant

    try:
        body = _body(await request.body(), Decide, token.principal)
    except api.ActorNamed as exc:
        return _forbidden(exc, "actor")
    until = None if body.until is None else cli_instant(body.until, "until")

    def work(led: Any) -> Decided:
        done = triage.decide(led, finding_id, accept=accept, reason=body.reason, until=until, actor=token.principal)
        f = done["finding"]
        return Decided(
            finding_id=finding_id,
            state="accepted" if accept else "suppressed",
            audit=f["audit"],
            kind=f["kind"],
            principal=f["principal"],
            scope=f["scope"],
            until=until,
            position=done["position"],
        )

    return await _as(request, token, work)


@router.post("/findings/{finding_id}/accept", response_model=Decided, openapi_extra=_schema(Decide))
async def accept(finding_id: FindingId, request: Request, token: Token = Depends(change_token)) -> Any:
    """Accept a finding the audits report now, as the token's principal (as `finding accept`)."""
    return await _decide(finding_id, request, token, True)


@router.post("/findings/{finding_id}/suppress", response_model=Decided, openapi_extra=_schema(Decide))
async def suppress(finding_id: FindingId, request: Request, token: Token = Depends(change_token)) -> Any:
    """Suppress a finding the audits report now, as the token's principal (as `finding suppress ID`)."""
    return await _decide(finding_id, request, token, False)


@router.post("/findings/{ref}/reopen", response_model=Reopened, openapi_extra=_schema(Reopen))
async def reopen(
    ref: Annotated[str, Path(description="A finding id (F-...) or a suppression rule id (R-...).")],
    request: Request,
    token: Token = Depends(change_token),
) -> Any:
    """Reopen a finding or a suppression rule, as the token's principal (as `finding reopen`)."""
    try:
        body = _body(await request.body(), Reopen, token.principal)
    except api.ActorNamed as exc:
        return _forbidden(exc, "actor")

    def work(led: Any) -> Reopened:
        done = triage.reopen(led, ref, reason=body.reason, actor=token.principal)
        return Reopened(reopened=ref, position=done["position"])

    return await _as(request, token, work)


@router.post("/findings/rules", response_model=RuleAdded, openapi_extra=_schema(Rule))
async def add_rule(request: Request, token: Token = Depends(change_token)) -> Any:
    """Suppress every finding of one kind about one principal (as `finding suppress --rule`)."""
    from ledger.timeutil import cli_instant

    try:
        body = _body(await request.body(), Rule, token.principal)
    except api.ActorNamed as exc:
        return _forbidden(exc, "actor")
    until = None if body.until is None else cli_instant(body.until, "until")

    def work(led: Any) -> RuleAdded:
        done = triage.add_rule(
            led,
            body.rule,
            principal=body.principal,
            tenant=body.tenant,
            reason=body.reason,
            until=until,
            actor=token.principal,
        )
        return RuleAdded(rule=done["rule"], position=done["position"])

    return await _as(request, token, work)


@router.get("/findings", response_model=Findings, dependencies=[Depends(feed_token), Depends(caught_up)])
async def list_findings(
    request: Request,
    state: Annotated[Literal["open", "accepted", "suppressed", "all"], Query()] = "open",
    audit: Annotated[str | None, Query(description=f"Only this audit's ({', '.join(triage.TRIAGE_AUDITS)}).")] = None,
    at: Annotated[str | None, Query(description="As they stood then (default now).")] = None,
    token: Token = Depends(feed_token),
) -> Any:
    """The findings with their state, who decided, why, until when (as `finding list --format json`)."""
    from ledger.timeutil import cli_instant

    instant = None if at is None else cli_instant(at, "at")

    def work(led: Any) -> Findings:
        rows = triage.list_findings(led, state=state, audit=audit, at=instant)
        position, _, link = led.store.head()
        return Findings(position=position, link=link, rows=rows)

    return await _as(request, token, work)
