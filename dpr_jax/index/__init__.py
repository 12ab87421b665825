"""Offline encoding, exact search, BM25 and hybrid fusion."""
