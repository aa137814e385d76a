"""`sync-service backfill`: brings existing Better Auth users into `users` and reports or repairs drift.
`source` reads Better Auth's own user table (catalog-resolved columns, keyset pages), `options` parses
the command line, `command` runs one backfill: every row through the ingest core as a `user.updated`,
or, with `--dry-run`, a drift report; `--delete-missing` deletes through `user.deleted`.

May import the top-level modules, `ingest`, `webhooks`, `ops.migrations` and `replay` (its direct
target, progress and report, so rows take exactly the path a replayed event takes); nothing imports it
but the CLI.
"""
