"""Memory: the timing process's RSS / GPU probe, and each variant's peak in a process of its own.

The timing run keeps every variant and the PyTorch reference in one process, so its RSS says little
about a single backend. ``isolated_memory`` starts ``python -m benchmarks.memory SPEC`` per variant:
the child builds only that variant (runtime variants import numpy + onnxruntime/TensorRT, never torch,
as deployed), runs every measured component once on the saved inputs, and reports its peak RSS
(VmHWM) and, on GPUs, torch's peak allocation or the device's used memory (NVML).

NVML numbers its devices in PCI bus order and ignores ``CUDA_VISIBLE_DEVICES``; CUDA's device 0 in this
process is the first device that variable lists (an index in CUDA's order, or a ``GPU-`` UUID or its
prefix). :func:`nvml_index` maps it by UUID: the CUDA runtime's own UUID of device 0 when torch has it,
else the variable's entry (an index agrees with NVML's only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or on
identical GPUs; a MIG instance is not mapped and the GPU probe is off).
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import typing as tp
from pathlib import Path

import numpy as np


# -- which GPU NVML should watch ----------------------------------------------------------------------------
def nvml_index(visible: tp.Optional[str], uuids: tp.Sequence[str], cuda_uuid: tp.Optional[str] = None) -> tp.Optional[int]:
    """NVML index of this process's CUDA device 0, or None when it cannot be told (or no GPU is visible).

    ``visible``: ``CUDA_VISIBLE_DEVICES`` (None when unset); ``uuids``: ``nvmlDeviceGetUUID`` of every NVML
    device in NVML order; ``cuda_uuid``: the CUDA runtime's UUID of device 0 when known (exact).
    """
    uuids = [u.decode() if isinstance(u, bytes) else str(u) for u in uuids]
    if cuda_uuid:
        want = cuda_uuid if cuda_uuid.startswith(("GPU-", "MIG-")) else f"GPU-{cuda_uuid}"
        return uuids.index(want) if want in uuids else None
    if visible is None:
        return 0 if uuids else None
    first = visible.split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        hits = [i for i, u in enumerate(uuids) if u.startswith(first)]
        return hits[0] if len(hits) == 1 else None
    try:
        index = int(first)
    except ValueError:  # "" (no device visible) or garbage, which CUDA also treats as no device
        return None
    return index if 0 <= index < len(uuids) else None


def cuda_device_uuid() -> tp.Optional[str]:
    """The CUDA runtime's UUID of device 0, through torch when this process already imported it."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return str(torch.cuda.get_device_properties(0).uuid)
    except Exception:  # pragma: no cover - old torch without .uuid
        pass
    return None


def nvml_handle(cuda_uuid: tp.Optional[str] = None) -> tp.Any:
    """NVML handle of the GPU this process computes on (see :func:`nvml_index`), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        uuids = [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        index = nvml_index(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids, cuda_uuid or cuda_device_uuid())
        return None if index is None else pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # no pynvml, no driver: no GPU numbers
        return None


def gpu_used_bytes(handle: tp.Any) -> tp.Optional[int]:
    if handle is None:
        return None
    import pynvml

    return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)


# -- the timing process ---------------------------------------------------------------------------------------
class MemoryProbe:
    """Samples this process's RSS (and the GPU's used memory through NVML when present) in a thread.

    ``with probe.track(key):`` attributes the samples taken meanwhile to ``key``; ``rss_peak[key]`` is the
    highest RSS seen while ``key`` ran (the whole process: every backend shares it).
    """

    def __init__(self, interval: float = 0.01):
        import psutil

        self._proc = psutil.Process(os.getpid())
        self.interval = interval
        self._key: tp.Optional[str] = None
        self.rss_peak: tp.Dict[str, int] = {}
        self.gpu_peak: tp.Dict[str, int] = {}
        self.process_peak = 0
        self._stop = threading.Event()
        self._nvml = nvml_handle()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def _sample(self) -> None:
        rss = self.rss()
        self.process_peak = max(self.process_peak, rss)
        key = self._key
        if key is not None:
            self.rss_peak[key] = max(self.rss_peak.get(key, 0), rss)
            gpu = gpu_used_bytes(self._nvml)
            if gpu is not None:
                self.gpu_peak[key] = max(self.gpu_peak.get(key, 0), gpu)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:  # pragma: no cover - a probe must never break a benchmark
                pass

    @contextlib.contextmanager
    def track(self, key: str):
        prev, self._key = self._key, key
        try:
            self._sample()
            yield
            self._sample()
        finally:
            self._key = prev

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


# -- one process per variant -------------------------------------------------------------------------------


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
    from .variants import runtime_variant, torch_variant

    comps = [c for c in spec["components"] if c != "end_to_end"]
    wl = _SavedWorkload(Path(spec["inputs"]), spec["solver"], spec["steps"])
    out: tp.Dict[str, tp.Any] = {"rss_after_imports_mb": _maxrss_mb()}
    nvml = nvml_handle(spec.get("gpu_uuid"))
    gpu0 = gpu_used_bytes(nvml)
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
        out["gpu_used_delta_mb"] = (gpu_used_bytes(nvml) - gpu0) / 2 ** 20
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
