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
write), its token checked as the router's dependency checks it (`Service.authenticated`, outside any read
transaction: the write takes the head's lock itself), in one hand-off to a pool of writer threads (requests
that wait for the ledger together are written together: group commit needs them waiting side by side).

Anything this path does not take as it is goes to the FastAPI app unchanged (its body replayed): a query
string (min_position), a body without a declared length, over the limit, a check not JSON or not valid
(FastAPI's 422 with its own wording), so the two cannot differ on what they refuse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
        body = await self._read(scope, receive, send, start)
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
        if not self._takes(scope, json_only=False):  # (the endpoint reads any body as it comes: JSON or JSONL)
            return await self.app(scope, receive, send)
        body = await self._read(scope, receive, send, start)
        if body is None:
            return
        await self._answer(
            scope,
            send,
            ("report",),
            lambda svc, token, seen: _WRITTEN.dump_json(record(svc, token, body), by_alias=True),
            start,
            write=True,
        )

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

    async def _read(self, scope: dict[str, Any], receive: Any, send: Any, start: float) -> bytes | None:
        """The request's body, read within the request timeout (it is read before any token is checked, and a
        caller that stops sending would otherwise hold the connection, and what it sent, for ever); None once
        answered here (503, 413) or when the client is gone."""
        reading = asyncio.ensure_future(self._body(receive))
        detail = await within(reading, self.seconds)
        if detail is not None:
            reading.cancel()
            errors.log_access(scope, 503, "-", start)
            await _send_json(send, 503, orjson.dumps({"detail": detail}), [(b"retry-after", b"1")])
            return None
        body = reading.result()
        if body is None:  # the client is gone: answered (to no one) and logged as the FastAPI path does
            response = errors.response_for(ClientDisconnect(), "POST", scope["path"], self.max_body)
            errors.log_access(scope, response.status_code, "-", start)
            await _send_json(send, response.status_code, response.body, response.raw_headers, typed=True)
            return None
        if len(body) > self.max_body:  # (the server holds a body to its declared length: a second guard)
            response = errors.response_for(errors.BodyTooLarge(), "POST", scope["path"], self.max_body)
            errors.log_access(scope, 413, "-", start)
            await _send_json(send, 413, response.body, response.raw_headers, typed=True)
            return None
        return body

    async def _body(self, receive: Any) -> bytes | None:
        """The request's body (None: the client left), read up to the first message past the limit."""
        chunks, seen = [], 0
        while True:
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
        write: bool = False,
    ) -> None:
        start = time.perf_counter() if start is None else start
        presented = _bearer(scope["headers"])
        svc: Service = self.api.state.service
        limiter = self.api.state.limiter
        noted: dict[str, str] = {}

        def checked() -> bytes:
            token, seen = svc.authenticated(presented, scopes, format_instant(now()))
            noted["token_id"] = token.token_id
            if limiter is not None:
                limiter.admit(token.token_id)  # after authentication: only a token's holder spends its requests
            return answer(svc, token, seen)

        def work() -> bytes:
            if write:  # the write takes the ledger (and the head's lock) itself, beside the others waiting
                return checked()
            with svc.reading():  # the token check, the head and the answer: one read transaction
                return checked()

        status = 500
        try:
            future = asyncio.get_running_loop().run_in_executor(self._writers if write else self._pool, work)
            detail = await within(future, self.seconds)
            if detail is not None:
                future.add_done_callback(lambda f: f.cancelled() or f.exception())
                status = 503
                return await _send_json(send, 503, orjson.dumps({"detail": detail}), [(b"retry-after", b"1")])
            try:
                body = future.result()
            except Exception as exc:  # noqa: BLE001 - every failure is answered as the FastAPI path answers it
                response = errors.response_for(exc, scope["method"], scope["path"], self.max_body)
                status = response.status_code
                return await _send_json(send, status, response.body, response.raw_headers, typed=True)
            status = 200
            await _send_json(send, 200, body, [])
        finally:
            errors.log_access(scope, status, noted.get("token_id", "-"), start)


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
