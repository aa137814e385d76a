"""The ingest core: the records a delivery travels as (`records`), the one function that decides and
writes a batch of them in one transaction (`core`), the group commit that gathers concurrent
deliveries into such batches (`group_commit`), and how a payload is made storable in the inbox's jsonb
(`payloads`).

May import only the top-level modules (config, errors, sql, database, batching). The HTTP route
(`webhooks`) and `replay --direct` both call it, so validation outcomes, ordering and idempotency are
written here once.
"""
