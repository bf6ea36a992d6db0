"""Figures drawn from bench/results (python -m plots.plot)."""
