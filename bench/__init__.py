"""Benchmarks behind ``make bench``: each ``bench/bench_*.py`` measures one thing, side by side in one run."""
