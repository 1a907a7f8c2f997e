"""Changes, review steps and tokens, each made as the token's principal (scopes `change`, `review`, `admin`).

No request names its actor: the actor is the principal of the token that authenticated it, so what the
ledger records is who held the token. A `change` is held to the authority rules (DESIGN section 3) whatever
the ledger enforces; a review step to the campaign's rules; both through the same api.py functions as the
CLI, so the refusals are the CLI's words (403 when the rules say no, 400 for a malformed request).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError
from starlette.concurrency import run_in_threadpool

from access_ledger import api
from access_ledger.server.deps import service, token_with
from access_ledger.server.models import EventsWritten, Problem
from ledger.errors import ReviewRefused, Unauthorised, ValidationError
from projections.tokens import Token

change_token = token_with("change")
review_token = token_with("review")
admin_token = token_with("admin")
_REFUSALS = {400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 413: {"model": Problem}}
router = APIRouter(prefix="/v1", responses=_REFUSALS)
T = TypeVar("T")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


async def _as(request: Request, token: Token, work: Callable[[Any], T]) -> T | JSONResponse:
    """Run `work(ledger)` off the event loop; a refusal by the rules is 403 naming what is missing."""

    def run() -> T | JSONResponse:
        try:
            with service(request).ledger() as led:
                return work(led)
        except Unauthorised as exc:
            return _forbidden(exc, "authority")
        except ReviewRefused as exc:
            return _forbidden(exc, "review")
        except api.ActorNamed as exc:
            return _forbidden(exc, "actor")

    return await run_in_threadpool(run)


def _forbidden(exc: Exception, error: str) -> JSONResponse:
    from access_ledger.server.errors import one_line

    return JSONResponse({"detail": one_line(exc), "error": error}, status_code=403)


def _problem(exc: PydanticError) -> str:
    err = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"


def _json(body: bytes) -> Any:
    from ledger.events import load_json

    try:
        return load_json(body)
    except ValidationError as exc:
        raise ValidationError(f"body: {exc}") from None


# -- change ------------------------------------------------------------------------------------


def _change_schema() -> dict[str, Any]:
    """Each change event of DESIGN section 4 as a request body: its fields without `actor` and `at`."""
    from ledger.authority import CHANGE_TYPES
    from ledger.events import EVENT_TYPES

    variants = []
    for kind in CHANGE_TYPES:
        schema = EVENT_TYPES[kind].model_json_schema()
        schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in ("actor", "at")}
        schema["required"] = [k for k in schema.get("required", []) if k not in ("actor", "at")]
        schema.pop("$defs", None)
        variants.append(schema)
    one = {"oneOf": variants, "discriminator": {"propertyName": "type"}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [one, {"type": "array", "items": one}]}}},
        }
    }


@router.post("/changes", tags=["changes"], response_model=EventsWritten, openapi_extra=_change_schema())
async def post_changes(request: Request, token: Token = Depends(change_token)) -> Any:
    """Make one change, or a JSON array of them (all or none), as the token's principal, now. Each is an event
    of DESIGN section 4 without `actor` and `at`: a body naming either is refused (403 `actor`), never rewritten.
    The authority rules apply whatever the ledger enforces: a change the principal may not make is 403
    `authority` naming the permission it lacks, and nothing is recorded. An `id` makes a retry a no-op."""
    changes = _json(await request.body())
    svc = service(request)

    def made_already(change: dict[str, Any]) -> bool:
        with svc.ledger() as led:
            return api.made_already(led, change)

    def run() -> EventsWritten | JSONResponse:
        try:
            chunk, skipped = api.change_events(changes, actor=token.principal, made_already=made_already)
            if chunk:
                # Written with the requests waiting beside it (group commit), judged on the state they leave.
                result = svc.write(chunk, enforce_authority=True)
                assert result.head is not None
                position, link = result.head
            else:
                result = None
                with svc.ledger() as led:
                    position, _, link = led.store.head()
        except Unauthorised as exc:
            return _forbidden(exc, "authority")
        except api.ActorNamed as exc:
            return _forbidden(exc, "actor")
        return EventsWritten(
            written=result.written if result else 0,
            skipped=(result.skipped if result else 0) + skipped,
            first=result.first if result else None,
            last=result.last if result else None,
            position=position,
            link=link,
        )

    return await run_in_threadpool(run)


# -- review ------------------------------------------------------------------------------------


class ReviewStart(_Body):
    name: str
    tenants: list[str] = Field(min_length=1)
    reviewer: str = Field(examples=["user:carol"])
    reviewer_for: list[str] = Field(default=[], description="team:NAME=PRINCIPAL: who reviews that team's members.")
    fallback_reviewer: str | None = None
    privileged_only: bool = False
    due: str | None = Field(default=None, description="When the review is due (ISO-8601, a date, -7d, ...).")
    reason: str | None = None


class Decision(_Body):
    item: int = Field(ge=1)
    decision: Literal["keep", "revoke"]
    reason: str | None = None


class Decisions(_Body):
    """A batch: recorded together (one batch id, the SHA-256 of the request body), all or none."""

    decisions: list[Decision] = Field(min_length=1, max_length=100_000)


class Reassign(_Body):
    items: list[int] = Field(min_length=1)
    to: str
    reason: str | None = None


class Close(_Body):
    undecided: Literal["revoke", "keep", "exception"] | None = Field(
        default=None,
        description="What undecided items come to (the CLI's --revoke-undecided, --keep-undecided, "
        "--leave-exceptions); none: refused while an item is undecided.",
    )
    auto_revoke: bool = Field(default=True, description="false: the CLI's --no-auto-revoke.")
    reason: str | None = None


class Table(BaseModel):
    position: int
    link: str
    rows: list[dict[str, Any]]


class Items(Table):
    campaign: str


class Status(Table):
    campaign: str
    summary: dict[str, Any]


class Started(BaseModel):
    campaign: str
    position: int
    items: int
    population_sha256: str


class Decided(BaseModel):
    campaign: str
    written: int
    first: int | None
    last: int | None


class Reassigned(BaseModel):
    campaign: str
    position: int
    items: list[int]
    reviewer: str


class Removal(BaseModel):
    position: int
    event: dict[str, Any]


class Closed(BaseModel):
    campaign: str
    position: int
    removed: list[Removal]


_CSV_BATCH = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [Decision.model_json_schema(), Decisions.model_json_schema()]}},
            "text/csv": {
                "schema": {"type": "string", "description": "As `review decide --batch FILE`: item,decision,reason."}
            },
        },
    }
}


@router.get("/reviews", tags=["reviews"], response_model=Table)
async def list_reviews(request: Request, token: Token = Depends(review_token)) -> Any:
    """Every campaign: scope, status, progress (as `review list`)."""
    return await _as(request, token, lambda led: api.review_list(led))


@router.post("/reviews", tags=["reviews"], response_model=Started)
async def start_review(body: ReviewStart, request: Request, token: Token = Depends(review_token)) -> Any:
    """Start a campaign owned by the token's principal (as `review start`)."""
    return await _as(
        request,
        token,
        lambda led: api.review_start(
            led,
            body.name,
            body.tenants,
            body.reviewer,
            body.reviewer_for,
            body.fallback_reviewer,
            body.privileged_only,
            body.due,
            actor=token.principal,
            reason=body.reason,
        ),
    )


@router.get("/reviews/{name}/items", tags=["reviews"], response_model=Items)
async def my_items(name: str, request: Request, open: bool = False, token: Token = Depends(review_token)) -> Any:
    """The items assigned to the token's principal, with their context (as `review items --reviewer ME`);
    `open=true`: only those not decided yet."""
    return await _as(request, token, lambda led: api.review_items(led, name, reviewer=token.principal, open_only=open))


@router.post("/reviews/{name}/decisions", tags=["reviews"], response_model=Decided, openapi_extra=_CSV_BATCH)
async def decide(name: str, request: Request, token: Token = Depends(review_token)) -> Any:
    """Decide as the token's principal: one {item, decision, reason}, or {decisions: [...]} or a CSV body (as
    `review decide --batch`) recorded as one batch, all or none. Self-review, an item assigned to someone else
    and a closed campaign are refused (403 `review`) with the CLI's words."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/csv":
        wanted = api.parse_review_batch(body, name, "body")
        batch: str | None = hashlib.sha256(body).hexdigest()
    else:
        raw = _json(body)
        many = isinstance(raw, dict) and "decisions" in raw
        try:
            if many:
                got = Decisions.model_validate(raw)
                wanted = [(n, d.item, d.decision, d.reason) for n, d in enumerate(got.decisions, 1)]
                batch = hashlib.sha256(body).hexdigest()
            else:
                one = Decision.model_validate(raw)
                wanted, batch = [(0, one.item, one.decision, one.reason)], None
        except PydanticError as exc:
            raise ValidationError(f"body: {_problem(exc)}") from None
    return await _as(
        request,
        token,
        lambda led: api.review_decide(led, name, wanted, actor=token.principal, batch_sha256=batch, source="body"),
    )


@router.post("/reviews/{name}/reassign", tags=["reviews"], response_model=Reassigned)
async def reassign(name: str, body: Reassign, request: Request, token: Token = Depends(review_token)) -> Any:
    """Give undecided items to another reviewer (the campaign's owner only, as `review reassign`)."""
    return await _as(
        request,
        token,
        lambda led: api.review_reassign(led, name, body.items, body.to, actor=token.principal, reason=body.reason),
    )


@router.get("/reviews/{name}/status", tags=["reviews"], response_model=Status)
async def status(name: str, request: Request, token: Token = Depends(review_token)) -> Any:
    """Progress per reviewer (as `review status`)."""
    return await _as(request, token, lambda led: api.review_status(led, name))


@router.post("/reviews/{name}/close", tags=["reviews"], response_model=Closed)
async def close(name: str, body: Close, request: Request, token: Token = Depends(review_token)) -> Any:
    """Close the campaign as the token's principal (its owner, or a holder of member:update in the
    organization), its revocations recorded in the same transaction (as `review close`)."""
    return await _as(
        request,
        token,
        lambda led: api.review_close(
            led, name, body.undecided, auto_revoke=body.auto_revoke, actor=token.principal, reason=body.reason
        ),
    )


# -- admin: tokens -----------------------------------------------------------------------------


class TokenRequest(_Body):
    principal: str = Field(examples=["service_account:platform"])
    scopes: list[Literal["report", "change", "read", "audit", "review", "admin"]] = Field(min_length=1)
    expires_at: str | None = Field(default=None, description="Unusable from then on (ISO-8601, a date, +30d, ...).")
    reason: str | None = None


class Revoke(_Body):
    reason: str | None = None


class Issued(BaseModel):
    """The token itself is in this answer only: the ledger records the SHA-256 of its secret."""

    token: str
    token_id: str
    position: int


class Revoked(BaseModel):
    token_id: str
    position: int


@router.post("/tokens", tags=["tokens"], response_model=Issued)
async def create_token(body: TokenRequest, request: Request, token: Token = Depends(admin_token)) -> Any:
    """Issue a token, recorded as issued by the token's principal (as `token create`)."""
    from ledger.timeutil import cli_instant

    expires = None if body.expires_at is None else cli_instant(body.expires_at, "expires_at")
    return await _as(
        request,
        token,
        lambda led: api.create_token(
            led, body.principal, list(body.scopes), expires, actor=token.principal, reason=body.reason
        ),
    )


@router.post("/tokens/{token_id}/revoke", tags=["tokens"], response_model=Revoked)
async def revoke_token(
    token_id: str, request: Request, body: Revoke | None = None, token: Token = Depends(admin_token)
) -> Any:
    """Revoke a token, recorded as revoked by the token's principal (as `token revoke`)."""
    reason = body.reason if body is not None else None

    def work(led: Any) -> Revoked:
        return Revoked(
            token_id=token_id, position=api.revoke_token(led, token_id, actor=token.principal, reason=reason)
        )

    return await _as(request, token, work)


@router.get("/tokens", tags=["tokens"], response_model=Table)
async def list_tokens(request: Request, token: Token = Depends(admin_token)) -> Any:
    """Every token ever issued, with its status now (never a secret or its hash; as `token list`)."""

    def work(led: Any) -> dict[str, Any]:
        got = api.list_tokens(led)
        return {"position": got["position"], "link": got["link"], "rows": got["rows"]}

    return await _as(request, token, work)
