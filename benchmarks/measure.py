"""Clocks, statistics and memory probes.

GPU work is timed with CUDA events when the callable says it runs on CUDA through torch; the engine
wrappers of ONNX Runtime (IOBinding) and TensorRT synchronise their stream before returning, so a host
clock read after them is correct. Every CPU sample also records the process CPU time over wall time,
which exposes other processes competing for the cores (the cited numbers say how busy the machine was).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
import typing as tp
from dataclasses import dataclass, field

import numpy as np


def stats(samples: tp.Sequence[float]) -> tp.Dict[str, tp.Any]:
    """median, p10, p90, mean, min, max and n of a list of seconds."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": None, "p10": None, "p90": None, "mean": None, "min": None, "max": None}
    return {"n": int(a.size), "median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
            "p90": float(np.percentile(a, 90)), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}


@dataclass
class Sample:
    seconds: float
    cpu_util: tp.Optional[float] = None  # process CPU seconds / wall seconds (2.0 = two cores busy)


def time_call(fn: tp.Callable[[], tp.Any], cuda_events: bool = False) -> Sample:
    """Time one call. ``cuda_events``: bracket it with CUDA events and read them after a sync."""
    if cuda_events:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return Sample(start.elapsed_time(end) / 1e3)
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    return Sample(wall, (time.process_time() - c0) / wall if wall > 0 else None)


class MemoryProbe:
    """Samples this process's RSS (and the GPU's used memory through NVML when present) in a thread.

    ``with probe.track(key):`` attributes the samples taken meanwhile to ``key``; ``peak(key)`` is the
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
        self._nvml = _nvml_handle()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def gpu_used(self) -> tp.Optional[int]:
        if self._nvml is None:
            return None
        import pynvml

        return int(pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used)

    def _sample(self) -> None:
        rss = self.rss()
        self.process_peak = max(self.process_peak, rss)
        key = self._key
        if key is not None:
            self.rss_peak[key] = max(self.rss_peak.get(key, 0), rss)
            gpu = self.gpu_used()
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


def _nvml_handle():
    try:
        import pynvml

        pynvml.nvmlInit()
        idx = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0] or 0)
        return pynvml.nvmlDeviceGetHandleByIndex(idx)
    except Exception:
        return None


@dataclass
class Timings:
    """Samples per (variant, measurement key)."""

    samples: tp.Dict[tp.Tuple[str, str], tp.List[Sample]] = field(default_factory=dict)

    def add(self, variant: str, key: str, sample: Sample) -> None:
        self.samples.setdefault((variant, key), []).append(sample)

    def summary(self, variant: str, key: str) -> tp.Optional[tp.Dict[str, tp.Any]]:
        got = self.samples.get((variant, key))
        if not got:
            return None
        out = stats([s.seconds for s in got])
        utils = [s.cpu_util for s in got if s.cpu_util is not None]
        if utils:
            out["cpu_util_median"] = float(np.median(utils))
        return out
