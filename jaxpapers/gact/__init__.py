"""GACT: activation-compressed training for any JAX model (arXiv 2206.11357)."""
