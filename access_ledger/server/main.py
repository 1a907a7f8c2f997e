"""The app uvicorn imports in each worker process of `serve --workers N` (the ledger named by the environment)."""

import os

from access_ledger.server import create_app
from access_ledger.server.app import configure_logging

configure_logging()
app = create_app(
    os.environ["ACCESS_LEDGER_SERVE_DB"],
    rate_limit=float(os.environ.get("ACCESS_LEDGER_SERVE_RATE") or 0) or None,
    request_timeout=float(os.environ.get("ACCESS_LEDGER_SERVE_TIMEOUT") or 60),
)
