"""Benchmarks: `make bench` (python -m bench.run). Every figure sits next to a baseline
measured in the same run, because absolute times on a shared 2-core machine are noisy."""
