"""Benchmarks of the runtime example: they print figures and never pass or fail on time."""
