"""Candidate generators behind one protocol (see base.py)."""
