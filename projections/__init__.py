"""The read side in Python: events folded into PermissionState; check, who-can, what-can, explain,
diff at any instant or position; review campaigns. Imports only ledger."""
