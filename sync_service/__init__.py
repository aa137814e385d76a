"""sync-service: keeps a PostgreSQL users table in sync with Better Auth."""

__version__ = "0.1.0"
