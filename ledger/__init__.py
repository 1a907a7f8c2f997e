"""The write side: vocabulary, events, the AccessLedger application, validation, storage, the hash
chain and verify, JSONL import/export. Imports neither projections nor reports."""
