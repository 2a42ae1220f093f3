"""tunlab benchmarks: `make bench` (python -m benchmarks). Not tests: nothing here asserts timing."""
