"""kgTransformer (Liu et al., KDD 2022, arXiv 2208.07638): masked pre-training of a Transformer
with Mixture-of-Experts over triple-transformed query graphs, for complex logical queries."""
