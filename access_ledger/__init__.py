"""The entry points: cli/ (the access-ledger command) and demo/ (the demo's data). The only package
that imports ledger, projections and reports together; nothing imports it but the tests and benchmarks."""
