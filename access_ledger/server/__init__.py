"""The HTTP service (`access-ledger serve`): FastAPI routers over the calls of access_ledger.api, the same
calls the CLI makes. It may import ledger, projections and reports (it is an entry point)."""

from access_ledger.server.app import create_app

__all__ = ["create_app"]
