"""Evaluation: DPR's answer matching (``has_answer``) and retrieval metrics (top-k accuracy, recall, MRR)."""
