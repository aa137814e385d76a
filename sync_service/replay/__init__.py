"""`sync-service replay` (and `scripts/replay_webhooks.py`): re-applies stored or exported webhook
payloads. `sources` reads them (a JSON Lines file, the inbox), `targets` applies them (signed POSTs to
a running service, or straight through the ingest core), `options` parses the command line, `report`
prints progress and the summary, and `command` runs one replay from start to end.

May import the top-level modules, `ingest`, `webhooks` (to decode a payload as the route does) and
`ops.migrations` (a direct replay brings the schema to head first); nothing imports it but the CLI.
"""
