"""Running the service: health and metrics routes, the Prometheus registry and what feeds it, logging
and the request log, `check-config`, inbox pruning, the embedded PostgreSQL and the migrations runner.

May import the top-level modules, `ingest.records` (outcome labels) and `webhooks.signatures`
(`check-config` signs a test delivery). `ops.metrics` and `ops.migrations` are leaves the feature
packages may use (`users.jwks` counts refreshes; `replay` migrates); nothing else in `ops` is imported
outside it but by the app and the CLI.
"""
