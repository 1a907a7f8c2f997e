"""The request and response bodies of the service, so that /openapi.json is the truth about them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(BaseModel):
    """Every refusal: one line, and for 401/403 which of missing, unknown, revoked, expired, inactive, scope."""

    detail: str
    error: str | None = None


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    position: int
    link: str


class Question(_Body):
    """One question of `check` (as one line of `check --batch`)."""

    principal: str = Field(examples=["user:alice"])
    action: str = Field(examples=["read"])
    resource: str = Field(examples=["model/fraud-detector"])
    tenant: str | None = Field(default=None, examples=["prod"])
    at: str | None = Field(default=None, description="Answer as of this instant (not with position).")
    position: int | None = Field(default=None, ge=0, description="Answer as of this log position (not with at).")


class Link(BaseModel):
    link: str
    position: int
    at: str
    actor: str
    reason: str | None
    event: str


class Path(BaseModel):
    role: str
    via_team: str | None
    tenant: str | None
    resource: str | None
    expires_at: str | None
    permission: str
    granted_by_role: str
    links: list[Link]


class CheckAnswer(BaseModel):
    """Allowed or not, every path that allows it (each link with its event), or why not."""

    principal: str
    action: str
    resource: str
    tenant: str | None
    at: str
    position: int
    link: str
    allowed: bool
    why_not: str | None
    paths: list[Path]


class BatchAnswer(BaseModel):
    question: dict[str, Any]
    allowed: bool
    position: int
    link: str


class BatchAnswers(BaseModel):
    """One answer per question, in the order asked (as `check --batch`)."""

    answers: list[BatchAnswer]


class WhoCanRow(BaseModel):
    principal: str
    role: str
    via_team: str | None
    permission: str
    resource_scope: str | None
    expires_at: str | None
    granted_at: str
    granted_by: str
    position: int
    reason: str | None


class WhoCan(BaseModel):
    at: str
    position: int
    link: str
    rows: list[WhoCanRow]


class WhatCanRow(BaseModel):
    principal: str
    tenant: str | None
    permission: str
    resource_scope: str | None
    role: str
    via_team: str | None
    from_role: str
    expires_at: str | None
    granted_at: str
    granted_by: str
    position: int
    reason: str | None


class WhatCan(BaseModel):
    at: str
    position: int
    link: str
    rows: list[WhatCanRow]


class LoggedEvent(BaseModel):
    position: int
    event: dict[str, Any]


class EventsPage(BaseModel):
    """Events after a position, and the log's head (position and link) when they were read."""

    position: int
    link: str
    events: list[LoggedEvent]


class EventsWritten(BaseModel):
    """What a POST of events wrote (skipped: ids already recorded with the same event), and the head after it."""

    written: int
    skipped: int
    first: int | None
    last: int | None
    position: int
    link: str


class Cause(BaseModel):
    """One event (or an expiry, position null) behind a change of permission."""

    position: int | None
    event: str
    at: str | None
    actor: str | None
    reason: str | None


class DiffRow(BaseModel):
    principal: str
    change: str = Field(description="gained or lost")
    tenant: str | None
    permission: str
    resource_scope: str | None
    causes: list[Cause]


class Diff(BaseModel):
    """Permissions gained and lost between two instants; position and link are the later instant's."""

    from_: str = Field(alias="from")
    to: str
    position: int
    link: str
    rows: list[DiffRow]

    model_config = ConfigDict(populate_by_name=True)


class AuditAnswer(BaseModel):
    """One audit's rows (every column, as `audit NAME --format json`), computed on the warehouse synced up to
    `position`, whose chain link is `link`."""

    audit: str
    title: str
    description: str
    params: dict[str, Any]
    position: int
    link: str
    columns: list[str]
    rows: list[dict[str, Any]]
    #: Findings accepted or suppressed at the audit's instant (out of `rows`): who decided, why, until when.
    triaged: list[dict[str, Any]] = []


class WhoAmI(BaseModel):
    """The token a request was made with, as the ledger records it, and the log position and link its state
    was judged at."""

    token_id: str
    principal: str
    scopes: list[str]
    expires_at: str | None
    position: int
    link: str
