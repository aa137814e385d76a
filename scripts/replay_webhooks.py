#!/usr/bin/env python3
"""Operators' replay tool: the same as `sync-service replay ...` (see `--help`)."""

import sys
from pathlib import Path

try:
    from sync_service.cli import main
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sync_service.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["replay", *sys.argv[1:]]))
