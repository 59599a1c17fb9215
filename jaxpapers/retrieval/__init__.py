"""Prompt-tuned dense retrievers (Tam et al. 2022, arXiv 2207.07087): P-tuning v2 deep prompts on
a frozen MiniLM dual encoder against full fine-tuning, BitFit, the encoder as shipped and BM25,
in domain, across topics and across domains, with calibration."""
