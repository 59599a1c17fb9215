"""Pre-training for adaptive learning in MOOCs (Zhong, Yu et al. 2022, arXiv 2208.04708)."""
