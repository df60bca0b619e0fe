"""ONNX Runtime engine (CPU, CUDA or TensorRT execution providers)."""
from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np

from ..errors import InputError

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(providers: tp.Optional[tp.Sequence[str]]) -> tp.List[str]:
    """Map short names (cpu/cuda/tensorrt) to ORT provider names; check they are available here."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not providers:
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    out = []
    for p in providers:
        full = PROVIDER_ALIASES.get(p.lower(), p)
        if full not in available:
            raise InputError(f"ONNX Runtime provider {p!r} is not available here (available: {available}); "
                             "install onnxruntime-gpu for cuda/tensorrt or use --provider cpu")
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


class OnnxRuntimeEngine:
    """An ``onnxruntime.InferenceSession`` with name-keyed numpy I/O.

    On CUDA, ``run_bound`` keeps inputs/outputs on the device through IOBinding so that an ODE loop
    does not copy the latent through host memory at every step.
    """

    def __init__(self, path: Path, name: str, providers: tp.Optional[tp.Sequence[str]] = None,
                 threads: tp.Optional[int] = None):
        import onnxruntime as ort

        if not Path(path).is_file():
            raise InputError(f"graph file {path} is missing; re-run jasco-export")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.name = name
        self.providers = resolve_providers(providers)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.on_gpu = self.session.get_providers()[0] != "CPUExecutionProvider"

    def __call__(self, **inputs: np.ndarray) -> tp.Dict[str, np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.name}: missing inputs {sorted(missing)}")
        feeds = {k: np.ascontiguousarray(inputs[k]) for k in self.input_names}
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs))

    # -- device-resident path (CUDA) -------------------------------------------------------------
    def to_device(self, array: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0)

    def run_bound(self, inputs: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
        """Run with IOBinding; inputs may be OrtValues already on the device. Outputs stay on device."""
        binding = self.session.io_binding()
        for k in self.input_names:
            v = inputs[k]
            if isinstance(v, np.ndarray):
                v = self.to_device(v)
            binding.bind_ortvalue_input(k, v)
        for k in self.output_names:
            binding.bind_output(k, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.get_outputs()))
