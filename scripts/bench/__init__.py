"""The benchmark `scripts/bench.py` runs: its phases (phases/), the apps it measures, the workload, wrk,
the JWKS server, the checks and the report.

A regular package (this file) so that `import bench.x` from `scripts/bench.py` finds this folder, not
the script itself.
"""
