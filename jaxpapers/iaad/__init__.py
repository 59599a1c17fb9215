"""IAAD (Liu et al. 2022, arXiv 2207.00737): road-side unit + vehicle cooperative perception over a
fluctuating network; intra-frame, inter-frame and planning fusion and an adaptive choice among
them, measured in a vectorised closed-loop simulator as the network degrades."""
