"""JASCO benchmarks: PyTorch vs ONNX Runtime vs TensorRT, per component and end to end.

Entry point: ``python -m benchmarks.run --help``. A run is five steps, one module each: :mod:`.plan`
(what runs), :mod:`.prepare` (model, exports, inputs, variants), :mod:`.measure` (clocks and the
measurement loops), :mod:`.assess` (derived numbers, targets), :mod:`.report` (JSON, markdown, plot).
Helpers: :mod:`.variants` (backend × precision runners and the timing rules), :mod:`.workload` (shared
inputs), :mod:`.flops` (FLOP count and device peaks), :mod:`.memory` (RSS/GPU probes, per-variant
processes), :mod:`.models` (presets and cached exports), :mod:`.cpu_variants` (the fused flow step).
"""
