"""JASCO benchmarks: PyTorch vs ONNX Runtime vs TensorRT, per component and end to end.

Entry point: ``python -m benchmarks.run --help``. Modules: :mod:`.run` (CLI, orchestration, results),
:mod:`.variants` (backend × precision runners), :mod:`.workload` (shared inputs), :mod:`.flops` (FLOP
count and device peaks), :mod:`.measure` (clocks, statistics, memory), :mod:`.quantize` (int8 flow
step), :mod:`.models` (presets and cached exports), :mod:`.report` (markdown, plot).
"""
