"""The real parts the tests stand up, shared by every suite: throwaway PostgreSQL databases, the service
on a loopback socket or as the `sync-service` subprocess, a Better Auth-shaped JWKS on loopback with real
signing keys (also the one the benchmark and `scripts/dev/mint_token.py` serve), a TCP proxy that takes a
database down and up, the pinned Better Auth node project, and free loopback ports. These modules import
only from `sync_service` and the test dependencies; `jwks` and `ports` import only the standard library,
PyJWT and cryptography, so the scripts can use them without the test extra.
"""
