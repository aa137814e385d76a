"""Receiving Better Auth's webhooks: the route, the Standard Webhooks signature check, and the decoding
and validation (the seed's rules) that turn verified bytes into an `ingest.records.Delivery`.

May import the top-level modules (config, errors, sql, database, batching) and `ingest`; nothing imports
`webhooks` but `replay` (to decode a payload exactly as the route does), `ops.config_check` (to sign a
test delivery) and the app.
"""
