"""Strict stand-ins for libraries that cannot run on the CI machines (TensorRT, CUDA)."""
