"""jaxpapers: ten 2022 papers re-implemented in JAX, tested and measured."""

__version__ = "0.1.0"
