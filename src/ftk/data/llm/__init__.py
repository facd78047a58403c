"""Synthetic training data from OpenAI-compatible endpoints (S4): spec, client, items, run."""
