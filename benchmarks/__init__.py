"""JASCO benchmarks: PyTorch vs ONNX Runtime vs TensorRT, per component and end to end.

Entry point: ``python -m benchmarks.run --help``. A run is five steps, one module each: :mod:`.plan`
(what runs), :mod:`.prepare` (model, exports, inputs, variants), :mod:`.measure` (clocks and the
measurement loops), :mod:`.assess` (derived numbers, targets), :mod:`.report` (JSON, markdown, plot).
Helpers: :mod:`.variants` (backend × precision runners and the timing rules), :mod:`.workload` (shared
inputs), :mod:`.flops` (FLOP count and device peaks), :mod:`.memory` (RSS/GPU probes, per-variant
processes), :mod:`.models` (presets and cached exports), :mod:`.cpu_variants` (the fused flow step).
GPU machines: :mod:`.gpu_check` (one command, offline, budgeted) and :mod:`.gpu_bundle` (what to carry).

From a plain checkout (no ``pip install``) the packages in ``runtime/`` and ``export/`` are put on
``sys.path`` here when they are not importable already (an installed project wins).
"""
import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parents[1]
for _pkg, _where in (("jasco_runtime", "runtime"), ("jasco_export", "export")):
    if _util.find_spec(_pkg) is None and (_ROOT / _where / _pkg).is_dir():
        _sys.path.insert(0, str(_ROOT / _where))

