"""Benchmarks: `python -m bench.run_all` runs every bench/bench_*.py module's main()."""
