"""Paintbridge benchmarks: `python -m bench` runs them all and writes bench/RESULTS.md (see bench/README.md).

Benchmarks measure; they never assert on speed. `--smoke` runs every case at tiny sizes (CI uses it to keep the
harness working).
"""
