"""Speed benchmarks: each stage of the framework as a ratio to a bare PyTorch loop (run_all.py)."""
