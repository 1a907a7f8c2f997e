"""An HTTP request as an ASGI server hands it to the app, for tests that drive the app message by message."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """The ASGI scope of `method path` on loopback, with `headers`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def run_async(main: Callable[[], Awaitable[Any]]) -> Any:
    """`asyncio.run(main())` in a thread of its own, and its result (or its exception). The session's browser
    (playwright's sync API, tests/conftest.py) keeps an event loop running in the main thread while it is
    open, and asyncio.run refuses to start in a thread where a loop runs: a test after the browser's in the
    same worker would fail for a reason that is not its own."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="run-async")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
