"""What bounds one client's use of the service: a per-token rate limit (429 with Retry-After) and a request
timeout (503). Both live in the memory of one worker process: nothing here is stored, so nothing here can
be edited to change an answer; with `serve --workers N` a token may make up to N times the rate."""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

REQUEST_TIMEOUT = 60.0  # seconds until a request that has not begun its answer is given up (503)


class RateLimited(Exception):
    """A token has used up its requests per second (429)."""

    def __init__(self, token_id: str, retry_after: int):
        super().__init__(f"token {token_id} is over its rate limit; retry after {retry_after} s")
        self.retry_after = retry_after


def parse_rate(text: str) -> float:
    """Requests per second from `N/s` or `N/m` (ValueError with the reason otherwise)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|m)\s*", text)
    if m is None:
        raise ValueError(f"{text!r} is not a rate: write N/s or N/m, e.g. 100/s")
    rate = float(m.group(1)) / (1 if m.group(2) == "s" else 60)
    if not rate > 0:
        raise ValueError(f"{text!r}: the rate must be above 0")
    return rate


class RateLimiter:
    """A token bucket per token id: `rate` requests a second, bursts of up to one second's worth."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self._clock = clock
        self.burst = max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}  # token id -> (requests left, when counted)
        self._lock = threading.Lock()  # sync endpoints' dependencies run in a thread pool

    def admit(self, token_id: str) -> None:
        """Count one request of this (authenticated) token; RateLimited when its bucket is empty."""
        at = self._clock()
        with self._lock:
            left, then = self._buckets.get(token_id, (self.burst, at))
            left = min(self.burst, left + (at - then) * self.rate)
            if left < 1.0 - 1e-9:  # float sums of elapsed time: a full request's worth counts as one
                self._buckets[token_id] = (left, at)
                raise RateLimited(token_id, max(1, math.ceil((1.0 - left) / self.rate)))
            self._buckets[token_id] = (left - 1.0, at)


async def within(future: Any, seconds: float, left: float | None = None) -> str | None:
    """None once `future` is done within `seconds` (or, given `left`, within what is left of a request's `seconds`);
    else why it was given up (the detail of the 503)."""
    try:
        done, _ = await asyncio.wait({future}, timeout=seconds if left is None else max(0.0, left))
    except asyncio.CancelledError:
        # uvicorn gives up the requests still running when SIGTERM's bounded wait is over.
        return "the service is shutting down: retry the request"
    if future in done:
        return None
    return (
        f"the request took longer than {seconds:g} s and was given up; a write may or may not "
        "have been made: retry it (events are idempotent by id)"
    )


class RequestTimeout:
    """Answer 503 when a request has not begun its answer within `seconds` (a streamed answer, once begun,
    is not cut). A write given up this way may still complete: the client retries it, idempotent by id."""

    def __init__(self, app: Any, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False
        given_up = False

        async def sending(message: dict[str, Any]) -> None:
            nonlocal started
            if given_up:
                return  # the client has had its 503 already
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, sending))
        detail = await within(task, self.seconds)
        if detail is None or started:
            return await task
        # Not awaited: a call running in a worker thread cannot be stopped, and its end is of no interest now.
        given_up = True
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        from fastapi.responses import JSONResponse

        await JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
