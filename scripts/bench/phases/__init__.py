"""The phases of a run, one module each, in the order `scripts/bench.py` runs them."""
