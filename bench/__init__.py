"""Benchmarks: the sweep (python -m bench.sweep, triton-softmax-bench), the pytest-benchmark
suite (bench/test_bench_steps.py), byte/FLOP models (bench/roofline.py); results in
bench/results/ as JSON Lines, drawn by plots/plot.py."""
