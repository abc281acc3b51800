"""Settings for the whole suite, applied before any test module imports huggingface_hub."""

import os

# No test may wait on the network: huggingface_hub reads HF_HUB_OFFLINE once, when it is first
# imported, and without it each check that resolves a hub id (the GPU recipes name
# Qwen/Qwen2.5-7B-Instruct) waits for connection time-outs, about 45 s each on a machine that
# reaches only package registries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
