"""Data: embedded corpora and loaders for the standard formats users bring."""
