"""CogVideo (arXiv 2205.15868) at CPU scale: captioned toy videos, a VQ tokenizer, dual-channel attention, hierarchical generation."""
