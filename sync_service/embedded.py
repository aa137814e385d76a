"""An embedded PostgreSQL (pgserver wheel) for running without DATABASE_URL."""

from __future__ import annotations

import sys
from pathlib import Path

from sync_service.errors import ConfigError


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) PostgreSQL in `data_dir`; return its URL. It stops when the process exits."""
    try:
        from pgserver import get_server  # type: ignore[attr-defined]
    except ImportError:
        raise ConfigError(
            "DATABASE_URL", "is not set and no embedded PostgreSQL is available on this platform; set it"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"sync-service: embedded PostgreSQL data folder: {data_dir}", file=sys.stderr)
    server = get_server(data_dir, cleanup_mode="stop")
    uri: str = server.get_uri()
    return uri
