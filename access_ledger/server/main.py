"""The app uvicorn imports in each worker process of `serve --workers N` (the ledger named by the environment)."""

import os

from access_ledger.server import create_app

app = create_app(os.environ["ACCESS_LEDGER_SERVE_DB"])
