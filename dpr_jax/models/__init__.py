"""Models: the Flax NNX BERT encoder, the dual encoder, tokenisation, Hugging Face weights in and out."""
