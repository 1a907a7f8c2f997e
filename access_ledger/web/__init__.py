"""The reviewers' web pages inside the service: sign-in, my items, deciding, the owner's view, the live report.

Imports the ledger, projections and reports layers and access_ledger.server's Service; the server imports
only `install` from here. Pages are built in Python with every user-chosen string escaped (html.py).
"""

from access_ledger.web.routes import install

__all__ = ["install"]
