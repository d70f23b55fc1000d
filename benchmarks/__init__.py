"""Benchmarks run by `make bench` (`python -m benchmarks`): each prints its figures and a
ratio against a baseline measured side by side in the same run. Speed goals live here, never
in tests; tests/unit/test_benchmarks_smoke.py runs each code path at a tiny size.

Generated files go under bench-out/ (gitignored).
"""
