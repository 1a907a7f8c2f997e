"""Reading the log (scope `read` or `audit`): the events after a position, in order."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from access_ledger import api
from access_ledger.server.deps import caught_up, feed_token, service
from access_ledger.server.models import EventsPage, Problem
from access_ledger.server.service import Service

router = APIRouter(
    prefix="/v1",
    tags=["events"],
    dependencies=[Depends(feed_token), Depends(caught_up)],
    responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 409: {"model": Problem}},
)


@router.get("/events", response_model=EventsPage)
def read_events(
    after: Annotated[int, Query(ge=0, description="Return events after this position.")] = 0,
    limit: Annotated[int, Query(ge=1, le=api.EVENTS_LIMIT)] = 1000,
    svc: Service = Depends(service),
) -> EventsPage:
    """Events after position AFTER (at most LIMIT), as `export` writes them, with the head they were read at."""
    with svc.ledger() as led:
        return EventsPage(**api.read_events(led, after, limit))
