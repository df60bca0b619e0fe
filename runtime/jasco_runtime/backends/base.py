"""The engine seam: one graph on one backend, the whole interface the runtime, ``verify`` and the benchmarks use.

An engine has a name, its input and output names, the largest batch its profile takes (``max_batch``), the
device it runs on, ``run(feeds) -> outputs`` (numpy in, numpy out), a device-resident binding
(``bind(arrays)``: a context manager that puts arrays on the engine's device once for many calls and frees them
when the block ends, on every path), a device workspace (``workspace()``: device arrays owned by a block, for a
loop that keeps its state on the device) with ``run_device(inputs, outputs, workspace)`` (device arrays in and
out, nothing copied) and ``close()``.  Nothing is reached through ``getattr`` defaults: an engine
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
    """Host↔device bytes an engine copied and device buffers it allocated (host-memory engines: all zero).

    As a solve's account (:meth:`add`): ``h2d``/``d2h``/``allocations`` during its evaluations, ``once_*`` its
    set-up and result (the device loop uploads the conditions and downloads the final state once per solve)."""

    h2d: int = 0
    d2h: int = 0
    allocations: int = 0
    once_h2d: int = 0
    once_d2h: int = 0
    once_allocations: int = 0
    solves: int = 0
    device_solves: int = 0

    def copy(self) -> "Traffic":
        return Traffic(**self.__dict__)

    def since(self, before: "Traffic") -> "Traffic":
        return Traffic(self.h2d - before.h2d, self.d2h - before.d2h, self.allocations - before.allocations)

    def add(self, loop: "Traffic", once: tp.Optional["Traffic"] = None, device: bool = False) -> None:
        """Account one solve: ``loop`` what its evaluations moved, ``once`` its set-up and result."""
        self.h2d, self.d2h, self.allocations = self.h2d + loop.h2d, self.d2h + loop.d2h, self.allocations + loop.allocations
        if once is not None:
            self.once_h2d += once.h2d
            self.once_d2h += once.d2h
            self.once_allocations += once.allocations
        self.solves += 1
        self.device_solves += int(device)

    def report(self, nfe: int) -> tp.Dict[str, float]:
        """Per evaluation, and per solve for the set-up (what results, ``--json`` and the benchmarks show)."""
        n, s = max(nfe, 1), max(self.solves, 1)
        return {"h2d_bytes_per_nfe": self.h2d / n, "d2h_bytes_per_nfe": self.d2h / n,
                "allocations_per_nfe": self.allocations / n, "h2d_bytes_per_solve": self.once_h2d / s,
                "d2h_bytes_per_solve": self.once_d2h / s, "allocations_per_solve": self.once_allocations / s}


@dataclass(frozen=True)
class DeviceArray:
    """A C-contiguous array in an engine's memory (device memory on a GPU backend, host memory on the CPU):
    its address, shape and dtype, and the allocation that owns it (``memory``: backend-specific).  Views of
    axis-0 ranges (:meth:`rows`) and reshapes share the allocation; none of them copies."""

    memory: tp.Any
    ptr: int
    shape: tp.Tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def rows(self, s: slice) -> "DeviceArray":
        """Rows ``s`` of axis 0 (a step-1 slice)."""
        start, stop, step = s.indices(self.shape[0])
        if step != 1:
            raise ValueError("device views take consecutive rows")
        row = self.nbytes // max(self.shape[0], 1)
        return DeviceArray(self.memory, self.ptr + start * row, (stop - start,) + self.shape[1:], self.dtype)

    def head(self, n: int) -> "DeviceArray":
        """The first ``n`` elements, as a 1-D array (e.g. the used part of a 256-byte padded schedule row)."""
        if n > int(np.prod(self.shape, dtype=np.int64)):
            raise ValueError(f"{n} elements asked of a {list(self.shape)} array")
        return DeviceArray(self.memory, self.ptr, (int(n),), self.dtype)

    def reshape(self, *shape: int) -> "DeviceArray":
        if int(np.prod(shape, dtype=np.int64)) != int(np.prod(self.shape, dtype=np.int64)):
            raise ValueError(f"cannot view {list(self.shape)} as {list(shape)}")
        return DeviceArray(self.memory, self.ptr, tuple(int(d) for d in shape), self.dtype)


class Workspace(abc.ABC):
    """Device arrays for one loop (an ODE solve), all freed when the workspace closes (``with``: on every path,
    exceptions and signals included).  Copies and allocations are counted in the engine's :class:`Traffic`."""

    @abc.abstractmethod
    def empty(self, shape: tp.Sequence[int], dtype: tp.Any = np.float32) -> DeviceArray:
        """A new device array (contents undefined)."""

    @abc.abstractmethod
    def upload(self, array: np.ndarray) -> DeviceArray:
        """A new device array holding ``array`` (one host→device copy)."""

    @abc.abstractmethod
    def write(self, array: DeviceArray, host: np.ndarray) -> None:
        """Copy ``host`` into the whole workspace array ``array`` (one host→device copy, queued after the work
        already queued on it; nothing allocated)."""

    @abc.abstractmethod
    def download(self, array: DeviceArray) -> np.ndarray:
        """``array``'s contents on the host, once the work queued before it is done (one device→host copy)."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Return once the work queued on the workspace's arrays is done (no copy)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Free every array of the workspace, after the work queued on them.  Idempotent."""

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()


class Engine(abc.ABC):
    """One graph on one backend.  Inputs/outputs are keyed by the manifest's names; ``traffic`` counts what
    crossed between host and device memory (the benchmarks report it per vector-field evaluation)."""

    traffic: Traffic
    name: str
    input_names: tp.List[str]
    output_names: tp.List[str]
    max_batch: tp.Optional[int]  # rows per call the engine's profile takes; None: any
    whole_inputs: tp.FrozenSet[str]  # inputs with no batch axis (solver_step's c): every chunk of a call takes them whole
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
    def workspace(self) -> Workspace:
        """A workspace on this engine's device (engines of one backend can run on each other's arrays)."""

    @abc.abstractmethod
    def run_device(self, inputs: tp.Mapping[str, DeviceArray], outputs: tp.Mapping[str, DeviceArray],
                   workspace: Workspace) -> None:
        """One call reading ``inputs`` and writing ``outputs`` in place (device arrays of the shapes the call
        takes and gives), queued in order with the workspace's other work: nothing crosses host memory."""

    @abc.abstractmethod
    def close(self) -> None:
        """Free what the engine holds (device buffers are not garbage-collected).  Idempotent."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()


class HostWorkspace(Workspace):
    """The :class:`Workspace` of an engine that runs on host memory: numpy arrays, nothing copied or counted."""

    def __init__(self) -> None:
        self.arrays: tp.List[np.ndarray] = []

    def _wrap(self, a: np.ndarray) -> DeviceArray:
        self.arrays.append(a)
        return DeviceArray(a, int(a.ctypes.data), tuple(a.shape), a.dtype)

    def empty(self, shape: tp.Sequence[int], dtype: tp.Any = np.float32) -> DeviceArray:
        return self._wrap(np.empty(tuple(int(d) for d in shape), dtype))

    def upload(self, array: np.ndarray) -> DeviceArray:
        return self._wrap(np.array(array, copy=True, order="C"))

    def write(self, array: DeviceArray, host: np.ndarray) -> None:
        check_write(array, host)
        np.copyto(host_view(array), host)

    def download(self, array: DeviceArray) -> np.ndarray:
        return host_view(array).copy()

    def synchronize(self) -> None:
        pass  # host calls return when they are done

    def close(self) -> None:
        self.arrays.clear()


def check_write(array: DeviceArray, host: np.ndarray) -> None:
    """ValueError unless ``host`` is C-contiguous with ``array``'s shape and dtype: what every
    :meth:`Workspace.write` checks."""
    if not isinstance(host, np.ndarray) or not host.flags.c_contiguous or host.shape != array.shape \
            or host.dtype != array.dtype:
        got = f"{list(host.shape)} {host.dtype}" if isinstance(host, np.ndarray) else type(host).__name__
        raise ValueError(f"write a C-contiguous {list(array.shape)} {array.dtype} array, not {got}")


def host_view(array: DeviceArray) -> np.ndarray:
    """The numpy view of a :class:`HostWorkspace` array (or of a view of one)."""
    base: np.ndarray = array.memory
    offset = array.ptr - int(base.ctypes.data)
    flat = base.reshape(-1).view(np.uint8)
    return flat[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)


def run_on_host(engine: "Engine", inputs: tp.Mapping[str, DeviceArray], outputs: tp.Mapping[str, DeviceArray]) -> None:
    """:meth:`Engine.run_device` of an engine on host memory: run, then write the outputs in place."""
    got = engine.run({k: host_view(v) for k, v in inputs.items()})
    for k, dst in outputs.items():
        view = host_view(dst)
        if got[k].shape != view.shape:
            raise ValueError(f"{engine.name}: output {k} is {list(got[k].shape)}, its array {list(view.shape)}")
        np.copyto(view, got[k])


@contextlib.contextmanager
def host_binding(arrays: tp.Mapping[str, np.ndarray]) -> tp.Iterator[tp.Dict[str, tp.Any]]:
    """:meth:`Engine.bind` of an engine that runs on host memory: the arrays themselves."""
    yield {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def row_slices(n: int, limit: tp.Optional[int]) -> tp.List[slice]:
    """Consecutive row ranges of at most ``limit`` rows covering ``n`` rows (None: one range)."""
    step = limit or max(n, 1)
    return [slice(i, i + step) for i in range(0, max(n, 1), step)]


def row_chunks(inputs: tp.Mapping[str, tp.Any], limit: tp.Optional[int],
               whole: tp.AbstractSet[str] = frozenset()) -> tp.List[tp.Tuple[slice, tp.Dict[str, tp.Any]]]:
    """Split a batch (axis 0 of every input but those in ``whole``, which every chunk takes as they are) into
    consecutive chunks of at most ``limit`` rows (None: one): [(row slice, chunk)]."""
    n = int(next(v for k, v in inputs.items() if k not in whole).shape[0])
    return [(s, {k: v if k in whole else v[s] for k, v in inputs.items()}) for s in row_slices(n, limit)]


@contextlib.contextmanager
def bound_chunks(engine: Engine, arrays: tp.Mapping[str, np.ndarray]
                 ) -> tp.Iterator[tp.List[tp.Tuple[slice, tp.Dict[str, tp.Any]]]]:
    """``arrays`` split into chunks of the engine's own profile, each bound to its device once for the block:
    [(row slice, bound feeds)].  Repeated calls (an ODE solve, a timed benchmark) then copy nothing of them."""
    with contextlib.ExitStack() as stack:
        yield [(s, stack.enter_context(engine.bind(chunk)))
               for s, chunk in row_chunks(arrays, engine.max_batch, engine.whole_inputs)]


def run_chunked(engine: Engine, feeds: tp.Mapping[str, np.ndarray]) -> tp.Dict[str, np.ndarray]:
    """``engine.run`` over row chunks no larger than the engine's own profile (``engine.max_batch``): the one
    place a call is chunked (pipeline, verify, benchmarks)."""
    parts = [engine.run(chunk) for _, chunk in row_chunks(feeds, engine.max_batch, engine.whole_inputs)]
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
