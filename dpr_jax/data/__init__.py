"""Input data: readers and validation for passages, questions and training records, SQuAD prep,
tokenised batches and hard-negative mining."""
