"""The JWT-guarded read API: the `/users` routes, the batched reader behind them, Better Auth token
verification (`tokens`), the remote key set it trusts (`jwks`) and the bearer middleware.

May import the top-level modules and `ops.metrics` (the JWKS refresh counter); never `webhooks`,
`ingest` or `replay`: reading users shares nothing with writing them but the database.
"""
