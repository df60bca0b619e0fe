"""Error metrics of the parity gate and ``verify`` (one definition for export, runtime and benchmarks)."""
from __future__ import annotations

import numpy as np


def max_abs(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got − ref| in float64; 0 for empty arrays; inf when shapes differ or a value is not finite."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    d = np.abs(got - ref)
    return float(np.max(d)) if np.isfinite(d).all() else float("inf")


def rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    """‖got − ref‖₂ / ‖ref‖₂ in float64.  A zero reference gives 0 when ``got`` is zero too and inf
    otherwise (never a silently absolute number); shape mismatch or non-finite values give inf."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape or not (np.isfinite(got).all() and np.isfinite(ref).all()):
        return float("inf")
    num = float(np.linalg.norm((got - ref).ravel()))
    den = float(np.linalg.norm(ref.ravel()))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den
