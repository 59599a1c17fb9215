"""Layers shared by several papers."""
