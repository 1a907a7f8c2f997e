"""The change feed (scope `read` or `audit`): the log as server-sent events that a SIEM follows with a cursor.

Each SSE event's id is its ledger position and its data the event as stored with the chain link after it.
Every link sent is recomputed here from the previous one and the event's stored bytes and compared with
`al_chain` (as `verify` does), starting from the link at the cursor: an event edited, inserted or dropped in
the database ends the stream with an `error` event instead of reaching the follower. The token is
re-checked on every poll, so revoking it (or its expiry, or its principal's deactivation) ends an open
stream within POLL seconds. Memory per connection is one batch of BATCH events: the next batch is read
only once the previous one has been handed to the socket, and a client that takes nothing for
SEND_TIMEOUT seconds is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import StreamingResponse
from starlette.types import Send

from access_ledger.server.deps import bearer, feed_token, service
from access_ledger.server.models import Problem
from access_ledger.server.service import Service
from ledger.errors import IntegrityFailure, LedgerError, ValidationError
from projections.tokens import TokenRefused

POLL = 0.5  # seconds between looks at the head (and at the token) while the follower is up to date
BATCH = 500  # events read and sent at once: the bound on what one connection holds
SEND_TIMEOUT = 60.0  # seconds a client may take to accept one batch before it is dropped
SCOPES = ("read", "audit")
log = logging.getLogger("access_ledger.server")

router = APIRouter(
    prefix="/v1",
    tags=["events"],
    dependencies=[Depends(feed_token)],
    responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}},
)


class PatientStream(StreamingResponse):
    """A streaming response that gives up on a client that accepts nothing for `send_timeout` seconds
    (the server then closes the connection), so a stalled reader holds one chunk at most, and not forever.
    A client that hangs up ends it at once (Starlette cancels the response on http.disconnect)."""

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
        send_timeout: float = SEND_TIMEOUT,
    ):
        super().__init__(content, status_code, headers=headers, media_type=media_type)
        self.send_timeout = send_timeout

    async def stream_response(self, send: Send) -> None:
        try:
            with anyio.fail_after(self.send_timeout):
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                with anyio.fail_after(self.send_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            with anyio.fail_after(self.send_timeout):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            log.info("a client took nothing for %g s: its response is dropped", self.send_timeout)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


class EventStream(PatientStream):
    """The feed's response: server-sent events, never cached or buffered on the way."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], status_code: int = 200, send_timeout: float = SEND_TIMEOUT):
        # no-cache: a proxy must not keep the stream; X-Accel-Buffering: nginx passes each event on at once.
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, status_code, headers=headers, send_timeout=send_timeout)


def frame(event: str | None, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE event. The data is compact JSON, which never holds a raw line break, so no stored string can
    end the frame early and forge an event of its own."""
    head = (b"id: %d\n" % event_id if event_id is not None else b"") + (
        b"event: %s\n" % event.encode() if event else b""
    )
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def linked_batch(led: Any, after: int, link: str | None, limit: int = BATCH) -> tuple[list[bytes], int, str | None]:
    """Frames of the events after `after` (at most `limit`), each link recomputed from `link` (the one at
    `after`; None: read it from the chain) and compared with the stored chain: (frames, last position, link)."""
    from ledger.events import decode
    from ledger.integrity import next_link
    from ledger.store import GENESIS_LINK

    store = led.store
    head, _, _ = store.head()  # checked against the head event's bytes
    if after > head:
        raise ValidationError(f"after: position {after} is beyond the ledger's head ({head})")
    if after == head:
        return [], after, link
    until = min(head, after + limit)
    with store.transaction(write=False) as c:
        if link is None:
            if after == 0:
                link = GENESIS_LINK
            else:
                c.execute("SELECT link FROM al_chain WHERE position = ?", (after,))
                row = c.fetchone()
                if row is None or not isinstance(row[0], str):
                    raise IntegrityFailure(f"the log has no chain link at position {after}: run `access-ledger verify`")
                link = row[0]
        rows = store.read_raw(c, after + 1, until - after, until)
    frames = []
    expected = after + 1
    for pos, oid, version, topic, state, stored, _ in rows:
        if pos != expected:
            raise IntegrityFailure(f"position {expected} is missing from the log: run `access-ledger verify`")
        link = next_link(link, pos, oid, version, topic, state)
        if stored != link:
            raise IntegrityFailure(f"position {pos} does not match its hash chain link: run `access-ledger verify`")
        frames.append(frame("ledger-event", {"position": pos, "link": link, "event": decode(state)}, pos))
        expected += 1
    if expected <= until:
        raise IntegrityFailure(f"position {expected} is missing from the log: run `access-ledger verify`")
    return frames, until, link


async def follow(svc: Service, presented: str | None, after: int, heartbeat: float) -> AsyncIterator[bytes]:
    """The feed from `after` on: every event in order, a comment line as heartbeat when idle, and an `end`
    (the token may no longer be used) or `error` (the log failed a check or cannot be read) event last."""
    from access_ledger.server.errors import one_line
    from ledger.timeutil import format_instant, now

    def step(after: int, link: str | None) -> tuple[list[bytes], int, str | None]:
        svc.authenticate(presented, SCOPES, format_instant(now()))
        with svc.ledger() as led:
            return linked_batch(led, after, link)

    link: str | None = None
    quiet_since = time.monotonic()
    yield b"retry: 2000\n\n"  # a browser's EventSource reconnects after 2 s, sending Last-Event-ID
    while True:
        try:
            frames, after, link = await run_in_threadpool(step, after, link)
        except TokenRefused as exc:
            yield frame("end", {"detail": one_line(exc), "error": exc.reason})
            return
        except LedgerError as exc:
            yield frame("error", {"detail": one_line(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - the stream has started: a last event says why it ends
            log.error("change feed failed", exc_info=exc)
            yield frame(
                "error", {"detail": f"internal error ({type(exc).__name__}); the service's log has the details"}
            )
            return
        if frames:
            yield b"".join(frames)
            quiet_since = time.monotonic()
            if len(frames) == BATCH:
                continue  # more is waiting: no pause
        elif time.monotonic() - quiet_since >= heartbeat:
            yield b": heartbeat\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL)


@router.get(
    "/events/stream",
    response_class=EventStream,
    responses={
        200: {
            # One server-sent event, as a client parses it from the stream (its fields are text).
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "event": {"type": "string", "enum": ["ledger-event", "end", "error"]},
                            "data": {"type": "string"},
                            "retry": {"type": "integer"},
                        },
                    }
                }
            },
            "description": "Server-sent events: `id` the position, `event: ledger-event`, `data` "
            '{"position", "link", "event"}; `end` when the token may no longer be used, `error` when the '
            "log fails a check.",
        }
    },
)
async def stream_events(
    after: Annotated[int, Query(ge=0, description="Send the events after this position (the cursor).")] = 0,
    heartbeat: Annotated[
        float, Query(ge=1, le=300, description="Seconds of quiet after which a comment line keeps proxies open.")
    ] = 15,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="The id of the last event received (sent by a reconnecting EventSource): overrides after.",
        ),
    ] = None,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    svc: Service = Depends(service),
) -> EventStream:
    """Follow the log: every event after the cursor in position order, then each new one as it is written
    (by this service or any other process writing the same ledger), until the token may no longer be used."""
    if last_event_id is not None:
        cursor = last_event_id.strip()
        if not cursor.isdigit() or not cursor.isascii() or len(cursor) > 18:
            raise ValidationError("Last-Event-ID: must be a ledger position (a whole number >= 0)")
        after = int(cursor)

    def check_cursor() -> None:
        with svc.ledger() as led:
            head = led.head()
        if after > head:
            raise ValidationError(f"after: position {after} is beyond the ledger's head ({head})")

    await run_in_threadpool(check_cursor)  # a bad cursor is a 400, not a stream that ends at once
    presented = credentials.credentials if credentials is not None else None
    return EventStream(follow(svc, presented, after, heartbeat))
