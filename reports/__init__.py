"""The DuckDB warehouse synced from the log, the audits kept as .sql files, renderers and evidence
bundles. May import ledger and projections, never access_ledger."""
