"""Recording platform facts (scope `report`): events as `import` takes them, all or none, idempotent by id."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from access_ledger import api
from access_ledger.server.deps import report_token, service
from access_ledger.server.models import EventsWritten, Problem
from access_ledger.server.service import Service
from projections.tokens import Token, TokenRefused

router = APIRouter(
    prefix="/v1",
    tags=["events"],
    dependencies=[Depends(report_token)],
    responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 413: {"model": Problem}},
)

_EVENT = {"type": "object", "description": "One event of DESIGN section 4 (as one line of `export`)."}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [_EVENT, {"type": "array", "items": _EVENT}]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "JSONL: one event a line."}},
        },
    }
}
# Events a `report` token may not post: tokens need `admin` too (a TokenIssued names a hash its poster
# chose), and review steps are decisions of a reviewer, never facts a platform reports in their name.
# A line naming neither (nor holding a JSON escape, which could spell one: "\u0054okenIssued") is
# not parsed twice.
# And a change in the name of `system` (which the authority rules exempt: the bootstrap and the platform's
# own automation) is not a fact a token holder may report: it would be a change no audit judges. Usage
# facts may still name system.
# Triage decisions likewise: an auditor's, judged by its actor's authority, so never posted here in another's
# name (a report token naming an org admin as actor took any finding off every audit): /v1/findings.
MARKERS = (b'"Token', b'"Review', b'"Finding', b'"Suppression', b"\\", b'"system"')
REVIEW_EVENTS = ("ReviewStarted", "ReviewDecided", "ReviewReassigned", "ReviewClosed")


@router.post("/events", response_model=EventsWritten, openapi_extra=_BODY)
async def post_events(request: Request, token: Token = Depends(report_token)) -> EventsWritten:
    """Record one event, a JSON array of events, or JSONL: every one of them or, at the first refused, none
    (400 `line N: field: problem`, as `import` says it). An event whose `id` is recorded already is skipped."""
    body = await request.body()
    svc = service(request)
    return await run_in_threadpool(record, svc, token, body)


def record(svc: Service, token: Token, body: bytes) -> EventsWritten:
    """Write a POST's body (one event, a JSON array or JSONL) for `token` (holding `report`), all or none: the
    endpoint's work, shared with the lean path (server/lean.py), which answers the plain case without FastAPI."""
    lines = api.event_lines(body)
    for n, line in enumerate(lines, 1):
        if any(m in line for m in MARKERS):
            kind, actor = _type_and_actor(line)
            if actor == "system" and not _valid(line):
                break  # import refuses this line (or an earlier one) with its own message
            _refuse_reserved(kind, actor, n, token)
    events = _parsed(lines)
    if events is None:
        # A line the model refuses: the import says which is the first thing wrong (a rule may refuse an
        # earlier line), as it does alone.
        with svc.ledger() as led:
            result = led.import_lines(lines)
    else:
        # Parsed here, outside the ledger's lock; written with the requests waiting beside it (group commit).
        result = svc.write(events)
    # The head as the write committed it (checked when its lock was taken): no second read.
    assert result.head is not None
    position, link = result.head
    return EventsWritten(
        written=result.written,
        skipped=result.skipped,
        first=result.first,
        last=result.last,
        position=position,
        link=link,
    )


def _parsed(lines: list[bytes]) -> list[tuple[int, dict]] | None:
    """(line number, canonical event) of each non-blank line, or None when a line does not parse."""
    from ledger.errors import LedgerError
    from ledger.events import parse_json

    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, parse_json(line)))
        except LedgerError:
            return None
    return out


def _refuse_reserved(kind: str | None, actor: str | None, n: int, token: Token) -> None:
    """TokenRefused (403) for an event type this token may not post here."""
    from ledger.events import FINDING_TYPES, USAGE_TYPES

    if kind == "TokenUsed":
        raise TokenRefused(403, "scope", f"line {n}: TokenUsed: only the service records a token's use")
    if kind in ("TokenIssued", "TokenRevoked") and "admin" not in token.scopes:
        raise TokenRefused(403, "scope", f"line {n}: token {token.token_id} lacks the scope admin (token events)")
    if kind in REVIEW_EVENTS:
        raise TokenRefused(
            403,
            "scope",
            f"line {n}: {kind}: review steps are not reported through /v1/events (a reviewer records them as themself)",
        )

    if kind in FINDING_TYPES:
        raise TokenRefused(
            403,
            "scope",
            f"line {n}: {kind}: triage decisions are not reported through /v1/events (an auditor records them "
            "as themself: /v1/findings)",
        )
    if actor == "system" and kind is not None and kind not in USAGE_TYPES:
        raise TokenRefused(
            403,
            "actor",
            f"line {n}: {kind}: a change in the name of system is not reported through /v1/events "
            "(system is exempt from the authority rules): name the actor who made it, or use /v1/changes",
        )


def _valid(line: bytes) -> bool:
    """Would the event model take this line (so a refusal for its actor is the first thing wrong with it)?"""
    from ledger.errors import ValidationError
    from ledger.events import parse_json

    try:
        parse_json(line)
    except ValidationError:
        return False
    return True


def _type_and_actor(line: bytes) -> tuple[str | None, str | None]:
    """The type and actor of the event on this line (not a text that happens to name one); None where the
    line is not an object or lacks it."""
    from ledger.errors import ValidationError
    from ledger.events import load_json

    try:
        obj = load_json(line)
    except ValidationError:
        return None, None  # not JSON: the import refuses it with its own message
    if not isinstance(obj, dict):
        return None, None
    kind, actor = obj.get("type"), obj.get("actor")
    return (kind if isinstance(kind, str) else None), (actor if isinstance(actor, str) else None)
