"""The engine seam: one graph on one backend, the whole interface the runtime, ``verify`` and the benchmarks use.

An engine has a name, its input and output names, the largest batch its profile takes (``max_batch``), the
device it runs on, ``run(feeds) -> outputs`` (numpy in, numpy out), a device-resident binding
(``bind(arrays)``: a context manager that puts arrays on the engine's device once for many calls and frees them
when the block ends, on every path) and ``close()``.  Nothing is reached through ``getattr`` defaults: an engine
that lacks a member fails when it is defined, not as a silent slow path.
"""
from __future__ import annotations

import abc
import contextlib
import typing as tp
from dataclasses import dataclass

import numpy as np

DEVICES = ("cpu", "cuda")
Feeds = tp.Mapping[str, tp.Any]  # numpy arrays, or handles from Engine.bind


@dataclass
class Traffic:
    """Host↔device bytes an engine copied and device buffers it allocated (host-memory engines: all zero)."""

    h2d: int = 0
    d2h: int = 0
    allocations: int = 0

    def copy(self) -> "Traffic":
        return Traffic(self.h2d, self.d2h, self.allocations)

    def since(self, before: "Traffic") -> "Traffic":
        return Traffic(self.h2d - before.h2d, self.d2h - before.d2h, self.allocations - before.allocations)


class Engine(abc.ABC):
    """One graph on one backend.  Inputs/outputs are keyed by the manifest's names; ``traffic`` counts what
    crossed between host and device memory (the benchmarks report it per vector-field evaluation)."""

    traffic: Traffic
    name: str
    input_names: tp.List[str]
    output_names: tp.List[str]
    max_batch: tp.Optional[int]  # rows per call the engine's profile takes; None: any
    device: str  # "cpu" | "cuda"

    @abc.abstractmethod
    def run(self, feeds: Feeds) -> tp.Dict[str, np.ndarray]:
        """One call; ``feeds`` may hold handles from :meth:`bind` (no copy for those)."""

    def __call__(self, **inputs: tp.Any) -> tp.Dict[str, np.ndarray]:
        return self.run(inputs)

    @abc.abstractmethod
    def bind(self, arrays: tp.Mapping[str, np.ndarray]) -> tp.ContextManager[tp.Dict[str, tp.Any]]:
        """Device copies of ``arrays`` for repeated :meth:`run` calls, freed when the block ends (CPU: the arrays)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Free what the engine holds (device buffers are not garbage-collected).  Idempotent."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()


@contextlib.contextmanager
def host_binding(arrays: tp.Mapping[str, np.ndarray]) -> tp.Iterator[tp.Dict[str, tp.Any]]:
    """:meth:`Engine.bind` of an engine that runs on host memory: the arrays themselves."""
    yield {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def row_chunks(inputs: tp.Mapping[str, tp.Any], limit: tp.Optional[int]) -> tp.List[tp.Dict[str, tp.Any]]:
    """Split a batch (axis 0 of every input) into consecutive chunks of at most ``limit`` rows (None: one)."""
    n = int(next(iter(inputs.values())).shape[0])
    step = limit or max(n, 1)
    return [{k: v[i:i + step] for k, v in inputs.items()} for i in range(0, max(n, 1), step)]


def run_chunked(engine: Engine, feeds: tp.Mapping[str, np.ndarray]) -> tp.Dict[str, np.ndarray]:
    """``engine.run`` over row chunks no larger than the engine's own profile (``engine.max_batch``): the one
    place a call is chunked (pipeline, verify, benchmarks)."""
    parts = [engine.run(chunk) for chunk in row_chunks(feeds, engine.max_batch)]
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
