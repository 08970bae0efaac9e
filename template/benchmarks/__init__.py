"""Benchmarks of the service and batch scoring (``make bench``).

Kept outside ``src/`` on purpose: the serving image copies only ``src/``, and a benchmark
harness is no part of what it serves.
"""
