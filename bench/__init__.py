"""Benchmarks that print JSON figures (they may read ../shared/data; tests never do)."""
