"""Recording a ZenML server: a REST client (httpx) and the sync that turns its state into events.

Part of the composition root: it may import ledger and projections; it writes only through
AccessLedger.append_many, so every event is validated, chained and judged like any other.
"""
