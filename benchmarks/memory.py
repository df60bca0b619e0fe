"""Peak memory of one variant serving the measured components, in a process of its own.

The timing run keeps every variant and the PyTorch reference in one process, so its RSS says little
about a single backend. ``isolated_memory`` starts ``python -m benchmarks.memory SPEC`` per variant:
the child builds only that variant (runtime variants import numpy + onnxruntime/TensorRT, never torch,
as deployed), runs every measured component once on the saved inputs, and reports its peak RSS
(VmHWM) and, on GPUs, torch's peak allocation or the device's used memory (NVML).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np


class _SavedWorkload:
    """The part of :class:`benchmarks.workload.Workload` the variant builders read, from an npz file."""

    def __init__(self, path: Path, solver: str, steps: int):
        data = np.load(path)
        self.inputs: tp.Dict[str, tp.Dict[str, np.ndarray]] = {}
        for name in data.files:
            key, _, inp = name.partition("::")
            self.inputs.setdefault(key, {})[inp] = data[name]
        self.solver, self.steps, self.batches = solver, steps, {}

    def component_inputs(self, components: tp.Sequence[str]) -> tp.Iterator[tp.Tuple[str, tp.Dict[str, np.ndarray]]]:
        for key, inputs in self.inputs.items():
            if key.split("/")[0] in components:
                yield key, inputs


def save_inputs(workload: tp.Any, components: tp.Sequence[str], path: Path) -> Path:
    arrays = {f"{key}::{k}": v for key, inputs in workload.component_inputs(components) for k, v in inputs.items()}
    np.savez(path, **arrays)
    return path


def _maxrss_mb() -> float:
    """Peak RSS of this process: VmHWM (Linux; per address space, so not inherited from the parent the way
    ``ru_maxrss`` is across fork + exec), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2 ** 20


def child(spec: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    from .measure import _nvml_handle
    from .variants import runtime_variant, torch_variant

    comps = [c for c in spec["components"] if c != "end_to_end"]
    wl = _SavedWorkload(Path(spec["inputs"]), spec["solver"], spec["steps"])
    out: tp.Dict[str, tp.Any] = {"rss_after_imports_mb": _maxrss_mb()}
    nvml = _nvml_handle()
    gpu0 = None
    if nvml is not None:
        import pynvml

        gpu0 = pynvml.nvmlDeviceGetMemoryInfo(nvml).used
    if spec["backend"].startswith("torch"):
        import torch

        from jasco_export import get_pretrained

        torch.set_num_threads(int(spec["threads"]))
        v = torch_variant(spec["backend"], spec["precision"], get_pretrained(spec["load_id"]), wl, comps)
    else:
        v = runtime_variant(spec["backend"], spec["precision"], Path(spec["export_dir"]), wl, comps, int(spec["threads"]))
    out["rss_after_setup_mb"] = _maxrss_mb()
    for key in v.call:
        v.call[key]()
    out["peak_rss_mb"] = _maxrss_mb()
    out["torch_imported"] = "torch" in sys.modules
    if v.device == "cuda" and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            out["torch_cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    if nvml is not None:
        import pynvml

        out["gpu_used_delta_mb"] = (pynvml.nvmlDeviceGetMemoryInfo(nvml).used - gpu0) / 2 ** 20
    return out


def isolated_memory(spec: tp.Dict[str, tp.Any], timeout: float = 1800) -> tp.Dict[str, tp.Any]:
    """Run :func:`child` in a fresh interpreter (same environment, HF_HUB_CACHE included)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "benchmarks.memory", json.dumps(spec)], cwd=root, env=env,
                       capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        return {"error": (r.stderr or r.stdout)[-400:]}
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
