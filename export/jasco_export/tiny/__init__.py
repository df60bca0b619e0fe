"""Tiny random JASCO models (and the real architectures with random weights) in the release format."""
