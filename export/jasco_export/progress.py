"""The exporter's progress lines (``[jasco-export] ...``), shared by its steps and ``jasco-export verify``."""
from __future__ import annotations


QUIET = False  # `jasco-export -q`: no progress lines (the summary and errors still print)


def log(msg: str) -> None:
    if not QUIET:
        print(f"[jasco-export] {msg}", flush=True)
