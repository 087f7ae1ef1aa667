"""LLM family: a LLaMA-style character decoder with a KV cache, its evaluation and generation."""
