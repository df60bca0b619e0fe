"""One vocabulary for the backends and precisions every CLI, the manifest and the benchmarks name, and the key
of one artifact of an export folder (:class:`ArtifactKey`)."""
from __future__ import annotations

import enum
import typing as tp
from dataclasses import dataclass

from ..errors import InputError


class Precision(str, enum.Enum):
    """The precision a graph computes in (``int8``: the CPU flow step, ONNX Runtime dynamic quantisation)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def choices(cls) -> tp.List[str]:
        """What a CLI's ``--precision`` accepts."""
        return [p.value for p in cls]

    @classmethod
    def parse(cls, name: tp.Union[str, "Precision"], what: str = "precision") -> "Precision":
        try:
            return cls(name)
        except ValueError:
            raise InputError(f"unknown {what} {name!r}; use one of {', '.join(cls.choices())}") from None


PRECISIONS = tuple(Precision.choices())


class Backend(str, enum.Enum):
    """The runtime that runs an artifact.  ``artifact`` is its name in artifact keys and file names
    (``onnx-fp16``, ``*.onnx`` / ``tensorrt-fp16``, ``*.plan``); :meth:`parse` takes every spelling the CLIs
    and benchmarks use."""

    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"

    def __str__(self) -> str:
        return self.value

    @property
    def artifact(self) -> str:
        return "onnx" if self is Backend.ONNXRUNTIME else "tensorrt"

    @property
    def suffix(self) -> str:
        return "onnx" if self is Backend.ONNXRUNTIME else "plan"

    @classmethod
    def choices(cls, *extra: str) -> tp.List[str]:
        """What a CLI's ``--backend`` accepts: ``extra`` (e.g. ``auto``) then each backend's canonical name."""
        return [*extra, *(b.value for b in cls)]

    @classmethod
    def spellings(cls) -> tp.List[str]:
        """Every accepted spelling (canonical names, artifact names and the short forms)."""
        return list(BACKEND_SPELLINGS)

    @classmethod
    def parse(cls, name: tp.Union[str, "Backend"]) -> "Backend":
        if isinstance(name, Backend):
            return name
        try:
            return BACKEND_SPELLINGS[str(name).lower()]
        except KeyError:
            raise InputError(f"unknown backend {name!r}; use one of {', '.join(cls.choices())}") from None


BACKEND_SPELLINGS: tp.Dict[str, Backend] = {
    "onnxruntime": Backend.ONNXRUNTIME, "onnx": Backend.ONNXRUNTIME, "ort": Backend.ONNXRUNTIME,
    "ort-cpu": Backend.ONNXRUNTIME, "ort-cuda": Backend.ONNXRUNTIME,
    "tensorrt": Backend.TENSORRT, "trt": Backend.TENSORRT,
}
"""The one mapping from the spellings in use (export CLI ``onnx``/``trt``, benchmark labels ``ort-cpu``/
``ort-cuda``/``trt``, artifact keys ``onnx``/``tensorrt``) to :class:`Backend`."""
ARTIFACT_BACKENDS = tuple(b.artifact for b in Backend)


@dataclass(frozen=True, order=True)
class ArtifactKey:
    """One artifact of an export folder: a graph in one precision for one backend.  ``backend`` is stored as
    the artifact name (``onnx`` | ``tensorrt``); any :class:`Backend` spelling is accepted."""

    graph: str
    precision: str  # a Precision value
    backend: str  # Backend.artifact: onnx | tensorrt
    variant: str = ""  # an alternative graph of the same precision (benchmarks: "fused" attention)

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision.parse(self.precision).value)
        try:
            backend = Backend.parse(self.backend)
        except InputError:
            raise InputError(f"unknown artifact backend {self.backend!r}; use one of {', '.join(ARTIFACT_BACKENDS)}") from None
        object.__setattr__(self, "backend", backend.artifact)

    @property
    def runtime(self) -> Backend:
        """The backend that runs this artifact."""
        return Backend.parse(self.backend)

    @property
    def slot(self) -> str:
        """The key inside ``graphs.<graph>.artifacts`` (e.g. ``onnx-fp16``)."""
        return f"{self.backend}-{self.precision}" + (f"+{self.variant}" if self.variant else "")

    @property
    def default_file(self) -> str:
        tag = self.precision + (f"-{self.variant}" if self.variant else "")
        return f"{self.graph}.{tag}.{self.runtime.suffix}"

    def __str__(self) -> str:
        return f"{self.graph} {self.precision}{'+' + self.variant if self.variant else ''} {self.backend}"

    @classmethod
    def from_slot(cls, graph: str, slot: str) -> "ArtifactKey":
        base, _, variant = slot.partition("+")
        backend, _, precision = base.partition("-")
        return cls(graph, precision, backend, variant)


EXPORT_TARGETS = ("all",)
"""``jasco-export --backend`` takes a :class:`Backend` spelling or ``all`` (ONNX graphs, plus engines where
TensorRT works)."""
