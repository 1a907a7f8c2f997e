"""The HTTP service (`access-ledger serve`): FastAPI routers over the calls of access_ledger.api, the same
calls the CLI makes. It may import ledger, projections and reports (it is an entry point)."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # FastAPI is imported only by what serves: every other command starts without it (most of a CLI
    # command's start-up time was importing the service it does not use).
    if name == "create_app":
        from access_ledger.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
