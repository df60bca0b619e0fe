"""The parity gate: every artifact of an export folder against the PyTorch reference."""
