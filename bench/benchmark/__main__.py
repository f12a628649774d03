"""`python -m bench.benchmark`: see bench/benchmark/__init__.py."""
from bench.benchmark.cli import main

main()
