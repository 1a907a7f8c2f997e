"""The demo's data: a year of an ML platform generated as events, with planted incidents."""
