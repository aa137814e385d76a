"""The benchmark `scripts/bench.py` runs: its phases (phases/), the apps it measures, the workload, wrk,
the checks and the report.

A regular package (this file) so that `import bench.x` from `scripts/bench.py` finds this folder, not
the script itself.
"""

import sys
from pathlib import Path

# The Better Auth stand-in (JWKS and tokens) is the tests' own, tests/helpers/jwks.py: one for both.
# After scripts/ (sys.path[0]) and before site-packages, so that no installed `tests` shadows ours.
_CHECKOUT = str(Path(__file__).resolve().parents[2])
if _CHECKOUT not in sys.path:
    sys.path.insert(1, _CHECKOUT)
