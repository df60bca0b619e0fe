"""The contract between the exported ``solver_step`` graph and the device loops that call it
(:mod:`jasco_runtime.device_solve`): what its coefficient vector ``c`` holds and in which order it sums.

One call of ``solver_step`` computes a Runge-Kutta stage input ``base + Σ_j slot_j · c_j`` over ``SLOTS`` derivative
slots (inputs ``k0`` … ``k6``; the guided field ``v`` the call itself combines from the flow step's rows takes the
slot marked in ``c``), the rows the next flow-step call sees (at time ``c[SEEN]``, a long-song window's continuation
path applied), and the squared sum ``Σ (z / (atol + rtol·max(|a|, |b|)))²`` per prompt behind torchdiffeq's RMS error
norm (_impl/misc.py ``_rms_norm``, _impl/rk_common.py ``_compute_error_ratio``).

Seven slots cover Dormand-Prince's error estimate (7 stage derivatives, torchdiffeq _impl/dopri5.py); Euler,
midpoint and Heun use one or two.  The slots are summed in the order torch's CPU ``sum`` adds fewer than 8 float32
terms (SumKernel.cpp ``row_sum``: four interleaved accumulators, the tail added to the first, then the other three):
``((((((t0 + t4) + t5) + t6) + t1) + t2) + t3)``.  With the unused slots' terms exactly zero this is that order for
every term count from 1 to 7, so a stage input is the numpy solver's (:func:`jasco_runtime.solvers._torch_sum`) bit
for bit.
"""
from __future__ import annotations

import typing as tp

import numpy as np

SLOTS = 7
SUM_ORDER = (0, 4, 5, 6, 1, 2, 3)
COEF = 0  # c[COEF + j]: the coefficient of slot j
V_SLOT = COEF + SLOTS  # c[V_SLOT + j] = 1: the call's own guided field v takes slot j (at most one)
SEEN = V_SLOT + SLOTS  # the time the rows written by the call are seen at (a continuation's path time)
ATOL, RTOL = SEEN + 1, SEEN + 2  # the error norm's tolerances
SIZE = RTOL + 1
SLOT_NAMES = tuple(f"k{j}" for j in range(SLOTS))


def coefficients(coefs: tp.Sequence[float], v_slot: tp.Optional[int] = None, seen_at: float = 0.0,
                 atol: float = 1.0, rtol: float = 0.0, width: int = SIZE) -> np.ndarray:
    """A ``c`` row (float32, ``width`` ≥ :data:`SIZE` values, zero-padded): ``coefs[j]`` for slot j (at most
    :data:`SLOTS`; the rest 0), ``v_slot`` the slot of the call's own field (None: the call adds none); the
    default tolerances keep the squared sums of a row whose norm is not read finite."""
    if len(coefs) > SLOTS or width < SIZE:
        raise ValueError(f"at most {SLOTS} slots in a row of at least {SIZE} values")
    row = np.zeros(width, np.float32)
    row[COEF:COEF + len(coefs)] = coefs
    if v_slot is not None:
        row[V_SLOT + v_slot] = 1
    row[SEEN], row[ATOL], row[RTOL] = seen_at, atol, rtol
    return row
