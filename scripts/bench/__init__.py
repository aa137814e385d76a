"""Helpers for `scripts/bench.py`: the workload, wrk, the JWKS server, the checks, the no-op app.

A regular package (this file) so that `import bench.x` from `scripts/bench.py` finds this folder, not
the script itself.
"""
