"""The hot paths, answered in front of FastAPI: `POST /v1/check` (one question or a list), `GET /v1/whoami` and
`POST /v1/events`.

Under load most of a check's time went to the framework around it (routing and dependency resolution,
four hand-offs to the thread pool, one per sync dependency and the endpoint, the access log and timeout
middlewares). Here the same request is read, checked and answered by one ASGI callable: the body is
parsed and validated with the same models, the token is checked by the same `Service.authenticated`
(one head read, a revoked or expired token refused, the rate limit after it), the answer is the same
function's (`check_answer`, `whoami_answer`) serialised as FastAPI would, and the ledger's work runs in
one hand-off to the worker's ledger thread, bounded by the request timeout, in one read transaction
(`Service.reading`: the token check, the head and the answer see one snapshot of the database).

`POST /v1/events` is the endpoint's own work (`routers.report.record`: the same parsing, refusals and group
write) in the route's order: the token first (`Service.authenticated` with the scope `report`, outside any read
transaction), so a refused caller's body is never read (nor a `100 Continue` sent), then the body, then the
write, which takes the head's lock itself; the two calls run in a pool of writer threads (requests that wait
for the ledger together are written together: group commit needs them waiting side by side).

One request timeout bounds each whole request, as FastAPI's RequestTimeout does: the body, the token check and
the answer share it (each waits only for what is left of it).

Anything this path does not take as it is goes to the FastAPI app unchanged (its body replayed): a query
string (min_position), a body without a declared length, over the limit, a check not JSON or not valid
(FastAPI's 422 with its own wording), so the two cannot differ on what they refuse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect

from access_ledger.server import errors
from access_ledger.server.limits import within
from access_ledger.server.models import BatchAnswers, CheckAnswer, EventsWritten, Question, WhoAmI
from access_ledger.server.routers.ops import whoami_answer
from access_ledger.server.routers.questions import check_answer
from access_ledger.server.routers.report import record
from access_ledger.server.service import Service
from ledger.timeutil import format_instant, now
from ledger.tokens import TOKEN_SCOPES

_QUESTIONS: TypeAdapter[Question | list[Question]] = TypeAdapter(Question | list[Question])
_CHECK: TypeAdapter[CheckAnswer | BatchAnswers] = TypeAdapter(CheckAnswer | BatchAnswers)
_WHOAMI: TypeAdapter[WhoAmI] = TypeAdapter(WhoAmI)
_WRITTEN: TypeAdapter[EventsWritten] = TypeAdapter(EventsWritten)
#: Bytes of a POST of events read before its token is admitted (a batch of some 4,000 events; the rest waits).
PREFETCH = 1 << 20
#: Writer threads of one worker process (as many as FastAPI's thread pool had for the same endpoint).
WRITERS = 40


class LeanPaths:
    """ASGI middleware: the hot paths answered here, everything else passed to `app` (the FastAPI stack)."""

    def __init__(self, app: Any, api: Any, max_body: int, seconds: float):
        self.app = app
        self.api = api  # the FastAPI app: its state holds the service and the rate limiter
        self.max_body = max_body
        self.seconds = seconds
        # One thread: requests take turns on the open ledger anyway (Service's lock).
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="writer")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["query_string"]:
            return await self.app(scope, receive, send)
        route = (scope["method"], scope["path"])
        if route == ("POST", "/v1/check"):
            return await self._check(scope, receive, send)
        if route == ("POST", "/v1/events"):
            return await self._events(scope, receive, send)
        if route == ("GET", "/v1/whoami"):
            return await self._answer(
                scope, send, TOKEN_SCOPES, lambda svc, token, seen: _whoami(svc, token), start=None
            )
        return await self.app(scope, receive, send)

    async def _check(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        if not self._takes(scope, json_only=True):
            return await self.app(scope, receive, send)
        body = await self._read(scope, asyncio.ensure_future(self._body(receive)), send, start, {})
        if body is None:
            return  # answered (503, 413) or the client is gone
        try:
            asked = _QUESTIONS.validate_python(orjson.loads(body)) if body else None
        except (orjson.JSONDecodeError, ValidationError):
            asked = None
        if asked is None:  # FastAPI says why (or parses what orjson would not): its answer, word for word
            return await self.app(scope, _replay(body, receive), send)
        await self._answer(scope, send, ("read",), lambda svc, token, seen: _check(svc, seen, asked), start)

    async def _events(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        if not self._takes(scope, json_only=False) or any(name == b"expect" for name, _ in scope["headers"]):
            # (any body as it comes, JSON or JSONL; a client waiting for `100 Continue` is answered by the route,
            # which sends it only once the token has been admitted)
            return await self.app(scope, receive, send)
        svc: Service = self.api.state.service
        presented = _bearer(scope["headers"])
        noted: dict[str, str] = {}
        # The body arrives meanwhile (with the headers, for most requests), and the token is checked first, as the
        # route's dependency checks it before the endpoint reads the body: a refused caller is answered at once
        # and what it sends is not read further. Until the token is admitted, at most PREFETCH bytes are read (a
        # token check waiting for the ledger, behind a write, must not let a refused caller fill memory meanwhile).
        admitted = asyncio.Event()  # (until it is set, at most PREFETCH bytes are read: see _body)
        reading = asyncio.ensure_future(self._body(receive, admitted))
        arrived: Future[None] = Future()
        reading.add_done_callback(lambda _: arrived.set_result(None))
        await asyncio.sleep(0)  # (the read takes what came with the headers before the token check begins)

        def admitted_then_written() -> Any:
            token = self._admitted(svc, presented, ("report",), noted)[0]
            if not arrived.done():
                return token  # a body still on its way is awaited on the event loop, not in a writer thread
            return self._written(svc, token, _whole(reading, self.max_body))

        try:
            got = await self._run(scope, send, start, self._writers, admitted_then_written, noted)
            if got is _SENT:
                return  # refused, failed or given up: answered
            if not isinstance(got, bytes):  # admitted (`got` is the token); the body was still on its way
                admitted.set()
                body = await self._read(scope, reading, send, start, noted)
                if body is None:
                    return
                token = got
                got = await self._run(scope, send, start, self._writers, lambda: self._written(svc, token, body), noted)
                if got is _SENT:
                    return
            await self._send(scope, send, 200, got, None, start, noted)
        finally:
            reading.cancel()

    @staticmethod
    def _written(svc: Service, token: Any, body: bytes) -> bytes:
        return _WRITTEN.dump_json(record(svc, token, body), by_alias=True)

    def _takes(self, scope: dict[str, Any], json_only: bool) -> bool:
        """Whether this path takes the request's body: a declared length within the limit (and, `json_only`,
        the content type application/json); else it goes to FastAPI as it came."""
        declared = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                content_type = value
        if declared is None or not declared.isdigit() or int(declared) > self.max_body:
            return False
        return not json_only or (
            content_type is not None and content_type.split(b";")[0].strip().lower() == b"application/json"
        )

    async def _read(
        self, scope: dict[str, Any], reading: asyncio.Future, send: Any, start: float, noted: dict[str, str]
    ) -> bytes | None:
        """The request's body (`reading`: the task of `_body` reading it), within what is left of the request
        timeout (a caller that stops sending would otherwise hold the connection, and what it sent, for ever);
        None once answered here (503, 413, or the 400 of a client gone before its body was whole, as the FastAPI
        path answers them)."""
        detail = await within(reading, self.seconds, self._left(start))
        if detail is not None:
            reading.cancel()
            response = _unavailable(detail)
        else:
            try:
                return _whole(reading, self.max_body)
            except Exception as exc:  # noqa: BLE001 - ClientDisconnect, BodyTooLarge: answered as FastAPI answers them
                response = errors.response_for(exc, "POST", scope["path"], self.max_body)
        await self._send(scope, send, response.status_code, response.body, response.raw_headers, start, noted)
        return None

    async def _body(self, receive: Any, admitted: asyncio.Event | None = None) -> bytes | None:
        """The request's body (None: the client left), read up to the first message past the limit; given
        `admitted`, no more than PREFETCH bytes of it until that is set (its token admitted)."""
        chunks, seen = [], 0
        while True:
            if admitted is not None and seen >= PREFETCH and not admitted.is_set():
                await admitted.wait()
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_body or not message.get("more_body", False):
                return b"".join(chunks)

    async def _answer(
        self,
        scope: dict[str, Any],
        send: Any,
        scopes: tuple[str, ...],
        answer: Callable[..., bytes],
        start: float | None,
    ) -> None:
        """A read: the token check, the head and the answer in one read transaction, on the ledger thread."""
        start = time.perf_counter() if start is None else start
        presented = _bearer(scope["headers"])
        svc: Service = self.api.state.service
        noted: dict[str, str] = {}

        def work() -> bytes:
            with svc.reading():  # the token check, the head and the answer: one read transaction
                token, seen = self._admitted(svc, presented, scopes, noted)
                return answer(svc, token, seen)

        body = await self._run(scope, send, start, self._pool, work, noted)
        if body is not _SENT:
            await self._send(scope, send, 200, body, None, start, noted)

    def _admitted(
        self, svc: Service, presented: str | None, scopes: tuple[str, ...], noted: dict[str, str]
    ) -> tuple[Any, Any]:
        """(token, the head it was checked at): the token may be used now with one of `scopes`, within its rate."""
        token, seen = svc.authenticated(presented, scopes, format_instant(now()))
        noted["token_id"] = token.token_id
        limiter = self.api.state.limiter
        if limiter is not None:
            limiter.admit(token.token_id)  # after authentication: only a token's holder spends its requests
        return token, seen

    async def _run(
        self,
        scope: dict[str, Any],
        send: Any,
        start: float,
        pool: ThreadPoolExecutor,
        work: Callable[[], Any],
        noted: dict[str, str],
    ) -> Any:
        """`work()` in a thread of `pool`, within what is left of the request timeout: its result, or _SENT once
        its failure (as the FastAPI path answers it) or the 503 of the timeout has been answered and logged."""
        future = asyncio.get_running_loop().run_in_executor(pool, work)
        detail = await within(future, self.seconds, self._left(start))
        if detail is not None:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            response = _unavailable(detail)
        else:
            try:
                return future.result()
            except Exception as exc:  # noqa: BLE001 - every failure is answered as the FastAPI path answers it
                response = errors.response_for(exc, scope["method"], scope["path"], self.max_body)
        await self._send(scope, send, response.status_code, response.body, response.raw_headers, start, noted)
        return _SENT

    def _left(self, start: float) -> float:
        """Seconds left of the request timeout for a request that came at `start` (one bound for the whole of it)."""
        return self.seconds - (time.perf_counter() - start)

    @staticmethod
    async def _send(
        scope: dict[str, Any],
        send: Any,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None,
        start: float,
        noted: dict[str, str],
    ) -> None:
        """Send one answer (`headers` None: a 200's JSON, else a JSONResponse's own headers) and log it."""
        try:
            await _send_json(send, status, body, headers or [], typed=headers is not None)
        finally:
            errors.log_access(scope, status, noted.get("token_id", "-"), start)


def _whole(reading: asyncio.Future, limit: int) -> bytes:
    """The body a finished read gave: ClientDisconnect if the client left first, BodyTooLarge past `limit` (the
    server holds a body to its declared length: a second guard)."""
    body = reading.result()
    if body is None:
        raise ClientDisconnect()
    if len(body) > limit:
        raise errors.BodyTooLarge()
    return body


#: What `_run` returns once it has answered the request itself (a refusal, a failure or the timeout).
_SENT = object()


def _unavailable(detail: str) -> Any:
    """The 503 of a request given up, as the FastAPI path's RequestTimeout gives it (headers in its order)."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})


def _check(svc: Service, seen: Any, asked: Question | list[Question]) -> bytes:
    return _CHECK.dump_json(check_answer(svc, seen, asked), by_alias=True)


def _whoami(svc: Service, token: Any) -> bytes:
    return _WHOAMI.dump_json(whoami_answer(svc, token), by_alias=True)


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the first Authorization header, as FastAPI's HTTPBearer reads it (None: not a bearer)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme and credentials and scheme.lower() == "bearer" else None
    return None


def _replay(body: bytes, receive: Any) -> Any:
    """A receive that gives the body already read, then whatever the client sends next."""
    given = False

    async def replayed() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send_json(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]], typed: bool = False
) -> None:
    """One JSON answer, with the headers Starlette's Response would give it (`typed`: `headers` has them)."""
    if not typed:
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
