"""Candidate generators behind one protocol (base.py): SimHash tables (simhash.py), FAISS
(faiss.py); make_index (factory.py) picks one; IndexManager (manager.py) keeps it fresh."""
