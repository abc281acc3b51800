"""Embedded CPU mode: real verl training on a laptop-class CPU (no GPU, no vLLM)."""
