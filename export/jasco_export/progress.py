"""The exporter's progress lines (``[jasco-export] ...``), shared by its steps and ``jasco-export verify``."""
from __future__ import annotations


def log(msg: str) -> None:
    print(f"[jasco-export] {msg}", flush=True)
