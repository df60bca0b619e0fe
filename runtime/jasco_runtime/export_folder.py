"""The export folder: ``manifest.json`` + graphs + engines + tables + tokenizer + golden set.

One object owns a folder and every change to its manifest: the exporter creates it, the fp16/int8 steps,
the TensorRT builder (``jasco-export --backend tensorrt`` and ``jasco-run build-engines``), the parity gate,
``verify`` and the benchmarks add to it through :class:`ExportFolder`, never by editing JSON.  This module is
also the manifest's one schema owner: each block of the document is a typed record (:class:`ModelRecord`,
:class:`AudioRecord`, :class:`GraphRecord` with its :class:`ArtifactRecord` s, :class:`TensorRTRecord`,
:class:`GoldenRecord`, :class:`ExportRecord`, gathered in :class:`Manifest`) with ``from_dict``/``to_dict``,
validated when the folder opens (a damaged field is one :class:`InputError` line naming it).  The vocabulary
shared by every CLI lives here too: :class:`Backend` and :class:`Precision`.  Torch-free, so the edge target
can use it.

Manifest schema 2 (``schema_version`` "2.x"): ``graphs.<name>`` declares the graph's ``role`` (``runtime``:
the pipeline runs it; ``extra``: exported on request, checked, not used by the pipeline), its ``precisions``
and I/O contract, and ``artifacts``: ``"<artifact backend>-<precision>"`` → ``{"file": ..., ...}``.  Artifact
keys are only ever made by :class:`ArtifactKey`.  Schema 2.1 adds ``digests`` (size + sha256 of each artifact's
files), ``audio.max_duration`` and ``export.runtime_graphs``; 2.0 folders still open (they are not checked
against digests, and their maximum duration is read from the decoder's profile).
"""
from __future__ import annotations

import enum
import json
import os
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .files import atomic_write_text, sha256_file

SCHEMA_VERSION = "2.1"
MANIFEST = "manifest.json"
GOLDEN_DIR = "golden"
ROLES = ("runtime", "extra")
# Schema 2.0 folders do not record which graphs the pipeline needs (2.1: ``export.runtime_graphs``).
_SCHEMA_2_0_RUNTIME_GRAPHS = ("text_encoder", "drums_encoder", "flow_step", "encodec_decoder")
_DAMAGED = "the manifest is damaged — re-run jasco-export"

PathLike = tp.Union[str, os.PathLike]


# -- vocabulary -------------------------------------------------------------------------------------------
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


# -- field checks -------------------------------------------------------------------------------------------
class ManifestError(InputError):
    """A damaged manifest field; :meth:`ExportFolder.open` prefixes the manifest's path."""

    def __init__(self, problem: str, missing: bool = False):
        super().__init__(problem)
        self.problem, self.missing = problem, missing

    def at(self, path: Path) -> InputError:
        return InputError(f"{path}{' ' if self.missing else ': '}{self.problem}; {_DAMAGED}")


_NUM = (int, float)
_T = tp.TypeVar("_T")


def _type_name(t: tp.Any) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


class _Fields:
    """Typed reads of one JSON object; every problem names the dotted field."""

    def __init__(self, obj: tp.Any, where: str):
        if not isinstance(obj, dict):
            raise ManifestError(f"'{where or 'manifest'}' must be an object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _typed(self, key: str, value: tp.Any, typ: tp.Any) -> tp.Any:
        if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
            raise ManifestError(f"'{self.name(key)}' must be {_type_name(typ)}, got {value!r}")
        return value

    def req(self, key: str, typ: tp.Any) -> tp.Any:
        if key not in self.obj:
            raise ManifestError(f"lacks '{self.name(key)}'", missing=True)
        return self._typed(key, self.obj[key], typ)

    def opt(self, key: str, typ: tp.Any, default: tp.Any = None) -> tp.Any:
        value = self.obj.get(key)
        return default if value is None else self._typed(key, value, typ)

    def sub(self, key: str) -> "_Fields":
        return _Fields(self.req(key, dict), self.name(key))

    def strings(self, key: str, required: bool = True) -> tp.Tuple[str, ...]:
        items = self.req(key, list) if required else self.opt(key, list, [])
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise ManifestError(f"'{self.name(key)}[{i}]' must be str, got {x!r}")
        return tuple(items)

    def positive(self, key: str, typ: tp.Any) -> tp.Any:
        value = self.req(key, typ)
        if value <= 0:
            raise ManifestError(f"'{self.name(key)}' must be positive, got {value}")
        return value

    def rest(self, *known: str) -> tp.Dict[str, tp.Any]:
        return {k: v for k, v in self.obj.items() if k not in known}


def _drop_none(d: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    return {k: v for k, v in d.items() if v is not None}


# -- records ----------------------------------------------------------------------------------------------
@dataclass
class ModelRecord:
    """``model``: the checkpoint the folder was exported from."""

    id: str
    variant: str
    revision: tp.Optional[str] = None
    sha256: tp.Dict[str, str] = field(default_factory=dict)  # checkpoint file → sha256
    t5: tp.Optional[str] = None

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "model") -> "ModelRecord":
        f = _Fields(d, where)
        return cls(f.req("id", str), f.req("variant", str), f.opt("revision", str), dict(f.opt("sha256", dict, {})),
                   f.opt("t5", str))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"id": self.id, "revision": self.revision, "sha256": dict(self.sha256), "variant": self.variant,
                "t5": self.t5}


@dataclass
class AudioRecord:
    """``audio``: one window's audio and latent frames; ``max_duration`` (2.1) is the longest song in seconds
    the export's decoder takes."""

    sample_rate: int
    channels: int
    frame_rate: float
    duration: float
    n_frames: int
    segment_samples: int
    max_duration: tp.Optional[float] = None

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "audio") -> "AudioRecord":
        f = _Fields(d, where)
        return cls(f.positive("sample_rate", int), f.req("channels", int), float(f.req("frame_rate", _NUM)),
                   float(f.req("duration", _NUM)), f.positive("n_frames", int), f.positive("segment_samples", int),
                   None if f.obj.get("max_duration") is None else float(f.positive("max_duration", _NUM)))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return _drop_none({"sample_rate": self.sample_rate, "channels": self.channels, "frame_rate": self.frame_rate,
                           "duration": self.duration, "n_frames": self.n_frames, "segment_samples": self.segment_samples,
                           "max_duration": self.max_duration})


@dataclass
class LatentsRecord:
    """``latents``: the flow's latent space (the decoder graph folds the un-normalisation in)."""

    dim: int
    mean: tp.Optional[float] = None
    std: tp.Optional[float] = None
    decoder_folds_unnormalisation: bool = True

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "latents") -> "LatentsRecord":
        f = _Fields(d, where)
        return cls(f.positive("dim", int), f.opt("mean", _NUM), f.opt("std", _NUM),
                   f.opt("decoder_folds_unnormalisation", bool, True))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return _drop_none({"dim": self.dim, "mean": self.mean, "std": self.std,
                           "decoder_folds_unnormalisation": self.decoder_folds_unnormalisation})


@dataclass
class DimsRecord:
    """``dims``: the transformer's size (informative; the fused-attention rewrite needs ``heads``)."""

    transformer: int
    heads: int
    layers: int
    flow: int

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "dims") -> "DimsRecord":
        f = _Fields(d, where)
        return cls(f.positive("transformer", int), f.positive("heads", int), f.positive("layers", int),
                   f.positive("flow", int))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"transformer": self.transformer, "heads": self.heads, "layers": self.layers, "flow": self.flow}


@dataclass
class DefaultsRecord:
    """``generation_defaults``: what a request gets when it names no setting."""

    cfg_coef_all: float
    cfg_coef_txt: float
    solver: str
    steps: int
    rtol: float
    atol: float
    note: tp.Optional[str] = None

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "generation_defaults") -> "DefaultsRecord":
        f = _Fields(d, where)
        return cls(f.req("cfg_coef_all", _NUM), f.req("cfg_coef_txt", _NUM), f.req("solver", str), f.req("steps", int),
                   f.req("rtol", _NUM), f.req("atol", _NUM), f.opt("note", str))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return _drop_none({"cfg_coef_all": self.cfg_coef_all, "cfg_coef_txt": self.cfg_coef_txt, "solver": self.solver,
                           "steps": self.steps, "rtol": self.rtol, "atol": self.atol, "note": self.note})


@dataclass(frozen=True)
class Digest:
    """Size and sha256 of one file: the size is checked whenever the folder opens, the hash by ``verify``."""

    size: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> "Digest":
        return cls(path.stat().st_size, sha256_file(path))

    @classmethod
    def from_dict(cls, d: tp.Any, where: str) -> "Digest":
        f = _Fields(d, where)
        return cls(f.req("size", int), f.req("sha256", str))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"size": self.size, "sha256": self.sha256}


@dataclass
class ArtifactRecord:
    """``graphs.<graph>.artifacts.<slot>``: the file, the digests of its files (the artifact and its external
    weights ``<file>.data``, 2.1) and what the step that wrote it reports (fp16 recipe, int8 recipe, TensorRT
    build settings) in ``info``."""

    file: str
    digests: tp.Dict[str, Digest] = field(default_factory=dict)
    info: tp.Dict[str, tp.Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: tp.Any, where: str) -> "ArtifactRecord":
        f = _Fields(d, where)
        digests = f.opt("digests", dict, {})
        return cls(f.req("file", str), {name: Digest.from_dict(v, f"{where}.digests.{name}") for name, v in digests.items()},
                   f.rest("file", "digests"))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        out: tp.Dict[str, tp.Any] = {"file": self.file, **self.info}
        if self.digests:
            out["digests"] = {name: d.to_dict() for name, d in self.digests.items()}
        return out

    @classmethod
    def written(cls, folder: Path, file: str, **info: tp.Any) -> "ArtifactRecord":
        """The record of ``folder/file`` as it is now, with the digests of it and of ``<file>.data``."""
        names = [file] + ([f"{file}.data"] if (folder / f"{file}.data").is_file() else [])
        return cls(file, {name: Digest.of(folder / name) for name in names}, dict(info))


@dataclass
class TensorRecord:
    """One graph input or output: name, numpy dtype name, shape (ints fixed, strings dynamic axes)."""

    name: str
    dtype: str
    shape: tp.Tuple[tp.Union[int, str], ...]

    @classmethod
    def from_dict(cls, d: tp.Any, where: str) -> "TensorRecord":
        f = _Fields(d, where)
        shape = f.req("shape", list)
        for i, s in enumerate(shape):
            if isinstance(s, bool) or not isinstance(s, (int, str)):
                raise ManifestError(f"'{where}.shape[{i}]' must be int or str, got {s!r}")
        return cls(f.req("name", str), f.req("dtype", str), tuple(shape))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class AxisRecord:
    """min / opt / max of one dynamic axis (the TensorRT optimisation profile)."""

    min: int
    opt: int
    max: int

    @classmethod
    def from_dict(cls, d: tp.Any, where: str) -> "AxisRecord":
        f = _Fields(d, where)
        out = cls(f.positive("min", int), f.positive("opt", int), f.positive("max", int))
        if not out.min <= out.opt <= out.max:
            raise ManifestError(f"'{where}' must have min ≤ opt ≤ max, got {out.to_dict()}")
        return out

    def to_dict(self) -> tp.Dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass
class GraphRecord:
    """``graphs.<name>``: a graph's role, precisions, I/O contract, profile and artifacts (slot → record)."""

    name: str
    role: str
    precisions: tp.Tuple[str, ...]
    inputs: tp.List[TensorRecord]
    outputs: tp.List[TensorRecord]
    profile: tp.Dict[str, AxisRecord] = field(default_factory=dict)
    description: str = ""
    artifact_records: tp.Dict[str, ArtifactRecord] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, d: tp.Any, where: tp.Optional[str] = None) -> "GraphRecord":
        where = where or f"graphs.{name}"
        f = _Fields(d, where)
        role = f.req("role", str)
        if role not in ROLES:
            raise ManifestError(f"'{where}.role' is {role!r}, expected one of {', '.join(ROLES)}")
        precisions = f.strings("precisions")
        for p in precisions:
            if p not in PRECISIONS:
                raise ManifestError(f"'{where}.precisions' has {p!r}, expected {', '.join(PRECISIONS)}")
        tensors = {k: [TensorRecord.from_dict(t, f"{where}.{k}[{i}]") for i, t in enumerate(f.req(k, list))]
                   for k in ("inputs", "outputs")}
        profile = {axis: AxisRecord.from_dict(r, f"{where}.profile.{axis}") for axis, r in f.req("profile", dict).items()}
        artifacts = {}
        for slot, art in f.req("artifacts", dict).items():
            try:
                ArtifactKey.from_slot(name, slot)
            except InputError as exc:
                raise ManifestError(f"'{where}.artifacts' has a bad key {slot!r} ({exc})") from exc
            artifacts[slot] = ArtifactRecord.from_dict(art, f"{where}.artifacts.{slot}")
        return cls(name, role, precisions, tensors["inputs"], tensors["outputs"], profile,
                   f.opt("description", str, ""), artifacts)

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"role": self.role, "precisions": list(self.precisions),
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "profile": {k: v.to_dict() for k, v in self.profile.items()}, "description": self.description,
                "artifacts": {slot: a.to_dict() for slot, a in self.artifact_records.items()}}

    @property
    def input_names(self) -> tp.List[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> tp.List[str]:
        return [t.name for t in self.outputs]

    def max_size(self, axis: str) -> tp.Optional[int]:
        p = self.profile.get(axis)
        return p.max if p else None

    @property
    def artifacts(self) -> tp.Dict[ArtifactKey, "Artifact"]:
        return {key: Artifact(key, rec) for key, rec in
                ((ArtifactKey.from_slot(self.name, slot), rec) for slot, rec in self.artifact_records.items())}

    def serving_precision(self, precision: str) -> str:
        """The precision this graph runs in when ``precision`` is asked for: the graph's declared fallback
        is fp32 (e.g. drums_encoder is fp32-only; int8 exists for the flow step only)."""
        return precision if precision in self.precisions else Precision.FP32.value


GraphEntry = GraphRecord  # the name readers of the old API use


@dataclass
class Artifact:
    """An artifact of the folder: its key and its record."""

    key: ArtifactKey
    record: ArtifactRecord

    @property
    def file(self) -> str:
        return self.record.file

    @property
    def info(self) -> tp.Dict[str, tp.Any]:
        return self.record.info


@dataclass
class CompatibilityRecord:
    """``tensorrt.compatibility.<graph>``: the export's TensorRT op/dtype/profile check of one graph
    (``ok``, ``problems`` and the check's other findings, kept as written)."""

    ok: bool
    problems: tp.List[str] = field(default_factory=list)
    details: tp.Dict[str, tp.Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: tp.Any, where: str) -> "CompatibilityRecord":
        f = _Fields(d, where)
        return cls(f.req("ok", bool), list(f.strings("problems", required=False)), f.rest("ok", "problems"))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"ok": self.ok, "problems": list(self.problems), **self.details}


@dataclass
class TensorRTRecord:
    """``tensorrt``: the export's compatibility check per graph, why engines were not built (``skipped``), and
    the device + versions the engines were built on (``device``: ``trt_version``, ``compute_capability``, ...)."""

    compatibility: tp.Dict[str, CompatibilityRecord] = field(default_factory=dict)
    skipped: tp.Optional[str] = None
    device: tp.Optional[tp.Dict[str, tp.Any]] = None

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "tensorrt") -> "TensorRTRecord":
        f = _Fields(d, where)
        compat = {name: CompatibilityRecord.from_dict(r, f"{where}.compatibility.{name}")
                  for name, r in f.opt("compatibility", dict, {}).items()}
        return cls(compat, f.opt("skipped", str), f.opt("device", dict))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return _drop_none({"compatibility": {k: v.to_dict() for k, v in self.compatibility.items()},
                           "skipped": self.skipped, "device": self.device})


@dataclass
class GoldenE2ERecord:
    """``golden.e2e``: the stored end-to-end generation (file, prompts, settings)."""

    file: str
    prompts: tp.List[str]
    settings: tp.Dict[str, tp.Any]

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "golden.e2e") -> "GoldenE2ERecord":
        f = _Fields(d, where)
        return cls(f.req("file", str), list(f.strings("prompts")), dict(f.req("settings", dict)))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"file": self.file, "prompts": list(self.prompts), "settings": dict(self.settings)}


@dataclass
class GoldenRecord:
    """``golden``: the golden set's files (graph → ``<graph>.npz`` under ``golden/``), its cases, its end-to-end
    case and its size on disk."""

    graphs: tp.Dict[str, str] = field(default_factory=dict)
    e2e: tp.Optional[GoldenE2ERecord] = None
    cases: tp.Tuple[str, ...] = ()
    bytes: tp.Optional[int] = None

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "golden") -> "GoldenRecord":
        f = _Fields(d, where)
        graphs = f.opt("graphs", dict, {})
        for name, rel in graphs.items():
            if not isinstance(rel, str):
                raise ManifestError(f"'{where}.graphs.{name}' must be a file name, got {rel!r}")
        e2e = f.obj.get("e2e")
        return cls(dict(graphs), GoldenE2ERecord.from_dict(e2e, f"{where}.e2e") if e2e else None,
                   f.strings("cases", required=False), f.opt("bytes", int))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return _drop_none({"graphs": dict(self.graphs), "cases": list(self.cases) or None,
                           "e2e": self.e2e.to_dict() if self.e2e else None, "bytes": self.bytes})


EXPORT_TARGETS = ("all",)
"""``jasco-export --backend`` takes a :class:`Backend` spelling or ``all`` (ONNX graphs, plus engines where
TensorRT works)."""


@dataclass
class ExportRecord:
    """``export``: the options the folder was exported with; ``runtime_graphs`` (2.1) the graphs the pipeline
    runs (the export's ``role: runtime`` declarations, also those left out with ``--graphs``)."""

    precisions: tp.Tuple[str, ...]
    backend: str  # a Backend value or "all"
    max_batch: int
    max_text_tokens: int
    opset: int
    runtime_graphs: tp.Optional[tp.Tuple[str, ...]] = None

    @classmethod
    def from_dict(cls, d: tp.Any, where: str = "export") -> "ExportRecord":
        f = _Fields(d, where)
        precisions = f.strings("precisions")
        for p in precisions:
            if p not in PRECISIONS:
                raise ManifestError(f"'{where}.precisions' has {p!r}, expected {', '.join(PRECISIONS)}")
        backend = f.req("backend", str)
        if backend not in EXPORT_TARGETS:
            try:
                backend = Backend.parse(backend).value  # 2.0 folders say onnx / trt
            except InputError:
                raise ManifestError(f"'{where}.backend' is {backend!r}, expected one of "
                                    f"{', '.join(Backend.choices(*EXPORT_TARGETS))}") from None
        runtime = f.strings("runtime_graphs") if "runtime_graphs" in f.obj else None
        return cls(precisions, backend, f.positive("max_batch", int), f.positive("max_text_tokens", int),
                   f.positive("opset", int), runtime)

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return _drop_none({"precisions": list(self.precisions), "backend": self.backend, "max_batch": self.max_batch,
                           "max_text_tokens": self.max_text_tokens, "opset": self.opset,
                           "runtime_graphs": list(self.runtime_graphs) if self.runtime_graphs is not None else None})


@dataclass
class Manifest:
    """The whole ``manifest.json``.  Unknown top-level blocks are kept as they are (``extra``), so a manifest
    written by a newer 2.x exporter survives a round trip through this one."""

    model: ModelRecord
    audio: AudioRecord
    latents: LatentsRecord
    conditioners: tp.Dict[str, tp.Dict[str, tp.Any]]
    generation_defaults: DefaultsRecord
    graphs: tp.Dict[str, GraphRecord]
    files: tp.Dict[str, str] = field(default_factory=dict)
    dims: tp.Optional[DimsRecord] = None
    export: tp.Optional[ExportRecord] = None
    tensorrt: tp.Optional[TensorRTRecord] = None
    golden: tp.Optional[GoldenRecord] = None
    tools: tp.Dict[str, str] = field(default_factory=dict)
    created: tp.Optional[str] = None
    schema_version: str = SCHEMA_VERSION
    extra: tp.Dict[str, tp.Any] = field(default_factory=dict)

    _KNOWN = ("schema_version", "model", "audio", "latents", "conditioners", "generation_defaults", "graphs", "files",
              "dims", "export", "tensorrt", "golden", "tools", "created")

    @classmethod
    def from_dict(cls, d: tp.Any) -> "Manifest":
        """The records of a manifest; raises :class:`ManifestError` naming the first damaged field."""
        f = _Fields(d, "")
        version = f.req("schema_version", str)
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise InputError(f"schema {version}, this runtime reads {SCHEMA_VERSION}; "
                             "re-export with this version of jasco-export")
        conditioners = f.sub("conditioners")
        conditioners.sub("text")
        for name, c in conditioners.obj.items():
            _Fields(c, f"conditioners.{name}")
        files = f.req("files", dict)
        for key, rel in files.items():
            if not isinstance(rel, str):
                raise ManifestError(f"'files.{key}' must be a file name, got {rel!r}")
        graphs = {name: GraphRecord.from_dict(name, g) for name, g in f.req("graphs", dict).items()}
        opt = {k: f.obj.get(k) for k in ("dims", "export", "tensorrt", "golden")}
        return cls(
            model=ModelRecord.from_dict(f.req("model", dict)), audio=AudioRecord.from_dict(f.req("audio", dict)),
            latents=LatentsRecord.from_dict(f.req("latents", dict)), conditioners=dict(conditioners.obj),
            generation_defaults=DefaultsRecord.from_dict(f.req("generation_defaults", dict)), graphs=graphs,
            files=dict(files), dims=DimsRecord.from_dict(opt["dims"]) if opt["dims"] is not None else None,
            export=ExportRecord.from_dict(opt["export"]) if opt["export"] is not None else None,
            tensorrt=TensorRTRecord.from_dict(opt["tensorrt"]) if opt["tensorrt"] is not None else None,
            golden=GoldenRecord.from_dict(opt["golden"]) if opt["golden"] else None,
            tools=dict(f.opt("tools", dict, {})), created=f.opt("created", str), schema_version=version,
            extra=f.rest(*cls._KNOWN))

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        out: tp.Dict[str, tp.Any] = {
            "schema_version": self.schema_version, "model": self.model.to_dict(), "audio": self.audio.to_dict(),
            "latents": self.latents.to_dict(), "dims": self.dims.to_dict() if self.dims else None,
            "conditioners": self.conditioners, "generation_defaults": self.generation_defaults.to_dict(),
            "graphs": {name: g.to_dict() for name, g in self.graphs.items()}, "files": dict(self.files),
            "export": self.export.to_dict() if self.export else None,
            "tensorrt": self.tensorrt.to_dict() if self.tensorrt else None,
            "golden": self.golden.to_dict() if self.golden else None,
            "tools": self.tools or None, "created": self.created, **self.extra}
        return _drop_none(out)


def validate_manifest(raw: tp.Any, path: Path) -> Manifest:
    """Schema check at load time, so a damaged manifest fails before any heavy work: the records, or one
    :class:`InputError` line naming the manifest and the field."""
    try:
        return Manifest.from_dict(raw)
    except ManifestError as exc:
        raise exc.at(path) from None
    except InputError as exc:
        raise InputError(f"{path} has {exc}") from None


def is_export_folder(folder: PathLike) -> bool:
    """True when ``folder`` holds a jasco-trt ``manifest.json`` (a JSON object with this project's top-level
    keys): what ``jasco-export --force`` may replace."""
    path = Path(folder) / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and all(k in raw for k in ("schema_version", "model", "graphs", "files"))


class ExportFolder:
    """An export folder and its manifest records.  Open one with :meth:`open`; the exporter uses :meth:`create`."""

    def __init__(self, folder: Path, records: Manifest):
        self.folder = Path(folder)
        self.records = records

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: PathLike, check_files: bool = True) -> "ExportFolder":
        """Read and validate ``folder/manifest.json``: the schema, then that the files it names exist and that
        every artifact recorded with digests has its recorded size (a truncated copy fails here, in one line;
        :meth:`check_digests` compares the hashes)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"engines folder {folder} does not exist; create it with "
                             f"`jasco-export --model ... --out {folder}`")
        path = folder / MANIFEST
        if not path.is_file():
            raise InputError(f"{folder} has no {MANIFEST}; it is not a jasco-export output folder (re-run jasco-export)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path} is not valid JSON ({exc}); re-run jasco-export") from exc
        self = cls(folder, validate_manifest(raw, path))
        if check_files:
            for key, rel in self.records.files.items():
                if not (folder / rel).is_file():
                    raise InputError(f"{folder / rel} ({key}) named in the manifest is missing; re-run jasco-export")
            self.check_digests(full=False)
        return self

    @classmethod
    def create(cls, folder: PathLike, records: tp.Union[Manifest, tp.Mapping[str, tp.Any]]) -> "ExportFolder":
        """A new folder's manifest (validated and written), from its records or their JSON form."""
        if not isinstance(records, Manifest):
            records = validate_manifest({**records, "schema_version": SCHEMA_VERSION}, Path(folder) / MANIFEST)
        records.schema_version = SCHEMA_VERSION
        self = cls(Path(folder), records)
        self.save()
        return self

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        """The manifest as JSON (a copy: changes go through this object's methods)."""
        return self.records.to_dict()

    def save(self) -> None:
        raw = self.records.to_dict()
        validate_manifest(raw, self.folder / MANIFEST)
        atomic_write_text(self.folder / MANIFEST, json.dumps(raw, indent=2) + "\n")

    def moved_to(self, folder: PathLike) -> "ExportFolder":
        """The same manifest at a new location (after the exporter renames its temp folder into place)."""
        return ExportFolder(Path(folder), self.records)

    # -- graphs and artifacts -----------------------------------------------------------------------------
    @property
    def graphs(self) -> tp.Dict[str, GraphRecord]:
        """The graph records (built once, when the manifest is read)."""
        return self.records.graphs

    def runtime_graphs(self) -> tp.List[str]:
        """The graphs the pipeline runs, as the export declared them; a folder exported with ``--graphs`` may
        lack some (clear error)."""
        declared = self.records.export.runtime_graphs if self.records.export else None
        if declared is None:  # schema 2.0
            declared = tuple(g for g in _SCHEMA_2_0_RUNTIME_GRAPHS if g != "drums_encoder" or self.has_drums)
        missing = [g for g in declared if g not in self.graphs]
        if missing:
            raise InputError(f"{self.folder} has no {', '.join(missing)} graph (exported with --graphs?); "
                             "re-run jasco-export without --graphs to generate music from it")
        return list(declared)

    def artifacts(self) -> tp.List[Artifact]:
        """Every artifact the manifest lists, graph by graph."""
        return [a for g in self.graphs.values() for a in g.artifacts.values()]

    def has(self, key: ArtifactKey) -> bool:
        g = self.graphs.get(key.graph)
        return g is not None and key.slot in g.artifact_records

    def artifact(self, key: ArtifactKey) -> Artifact:
        if not self.has(key):
            have = sorted(str(a.key) for a in self.artifacts() if a.key.graph == key.graph)
            raise InputError(f"{self.folder} has no {key} artifact (has: {', '.join(have) or 'none'}); "
                             "re-export it with jasco-export" if key.runtime is Backend.ONNXRUNTIME else
                             f"{self.folder} has no {key} engine; build it on this machine with "
                             f"`jasco-run build-engines {self.folder}` (engines are not portable)")
        return Artifact(key, self.graphs[key.graph].artifact_records[key.slot])

    def path(self, key: ArtifactKey) -> Path:
        return self.folder / self.artifact(key).file

    def add_artifact(self, key: ArtifactKey, file: tp.Optional[str] = None, save: bool = True, **info: tp.Any) -> Artifact:
        """Register ``file`` (default ``key.default_file``, which must exist in the folder) as ``key``, with the
        size and sha256 of it and of its external weights ``<file>.data``."""
        if key.graph not in self.graphs:
            raise InputError(f"{self.folder} declares no graph {key.graph!r}; graphs: {', '.join(self.graphs)}")
        file = file or key.default_file
        if not (self.folder / file).is_file():
            raise InputError(f"cannot register {key}: {self.folder / file} does not exist")
        record = ArtifactRecord.written(self.folder, file, **info)
        self.graphs[key.graph].artifact_records[key.slot] = record
        if save:
            self.save()
        return Artifact(key, record)

    def remove_artifact(self, key: ArtifactKey, save: bool = True) -> None:
        g = self.graphs.get(key.graph)
        if g is not None:
            g.artifact_records.pop(key.slot, None)
        if save:
            self.save()

    def resolve(self, graph: str, backend: tp.Union[str, Backend], precision: str) -> ArtifactKey:
        """The artifact that serves ``graph`` when the runtime asks for ``precision`` on ``backend`` (any
        :class:`Backend` spelling), following the graph's declared fp32 fallback."""
        g = self.graphs.get(graph)
        if g is None:
            raise InputError(f"{self.folder} has no {graph} graph; re-run jasco-export without --graphs")
        if Backend.parse(backend) is Backend.TENSORRT:
            return ArtifactKey(graph, "fp16" if "fp16" in g.precisions else "fp32", Backend.TENSORRT)
        return ArtifactKey(graph, g.serving_precision(precision), Backend.ONNXRUNTIME)

    # -- digests --------------------------------------------------------------------------------------------
    def digest_problems(self, full: bool = True) -> tp.List[str]:
        """Each recorded artifact file that exists but differs from its digest: size always, sha256 when ``full``.
        (Missing files are reported by whoever needs them, e.g. verify's FAIL rows.)"""
        problems = []
        for art in self.artifacts():
            for name, digest in art.record.digests.items():
                path = self.folder / name
                if not path.is_file():
                    continue
                size = path.stat().st_size
                if size != digest.size:
                    problems.append(f"{name} has {size} bytes, the manifest records {digest.size}")
                elif full and sha256_file(path) != digest.sha256:
                    problems.append(f"{name} does not match its recorded sha256")
        return problems

    def check_digests(self, full: bool = True) -> None:
        """One :class:`InputError` line naming every damaged artifact file (see :meth:`digest_problems`)."""
        problems = self.digest_problems(full)
        if problems:
            raise InputError(f"{self.folder} is damaged: {'; '.join(problems)}; copy the export folder again "
                             "or re-run jasco-export")

    # -- records --------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """A support file (``tables``, ``tokenizer``, ``chords_mapping``, ``parity``) named in ``files``."""
        if name not in self.records.files:
            raise InputError(f"{self.folder}/{MANIFEST} names no '{name}' file; re-run jasco-export")
        return self.folder / self.records.files[name]

    def add_file(self, name: str, rel: str, save: bool = True) -> None:
        self.records.files[name] = rel
        if save:
            self.save()

    def set_tensorrt(self, record: TensorRTRecord, save: bool = True) -> None:
        """Replace the ``tensorrt`` record (the export's compatibility check, the builder's device)."""
        self.records.tensorrt = record
        if save:
            self.save()

    def set_golden(self, record: GoldenRecord, save: bool = True) -> None:
        """Replace the ``golden`` record (the exporter, after writing the golden set)."""
        self.records.golden = record
        if save:
            self.save()

    @property
    def golden_dir(self) -> Path:
        return self.folder / GOLDEN_DIR

    # -- records the readers use --------------------------------------------------------------------------
    @property
    def model(self) -> ModelRecord:
        return self.records.model

    @property
    def audio(self) -> AudioRecord:
        return self.records.audio

    @property
    def export(self) -> tp.Optional[ExportRecord]:
        return self.records.export

    @property
    def tensorrt(self) -> TensorRTRecord:
        """The ``tensorrt`` record (empty when the folder has none)."""
        return self.records.tensorrt or TensorRTRecord()

    @property
    def golden(self) -> tp.Optional[GoldenRecord]:
        return self.records.golden

    @property
    def dims(self) -> tp.Optional[DimsRecord]:
        return self.records.dims

    @property
    def exported_precisions(self) -> tp.Tuple[str, ...]:
        """The precisions the export was asked for (``export.precisions``)."""
        return self.records.export.precisions if self.records.export else ()

    @property
    def model_id(self) -> str:
        return self.records.model.id

    @property
    def sample_rate(self) -> int:
        return self.records.audio.sample_rate

    @property
    def n_frames(self) -> int:
        return self.records.audio.n_frames

    @property
    def segment_samples(self) -> int:
        return self.records.audio.segment_samples

    @property
    def frame_rate(self) -> float:
        return self.records.audio.frame_rate

    @property
    def duration(self) -> float:
        return self.records.audio.duration

    @property
    def max_duration(self) -> float:
        """The longest song (seconds) this export serves: ``audio.max_duration`` (2.1); a 2.0 folder's is what
        its decoder's ``frames`` profile takes (one window when the decoder has a fixed length)."""
        if self.records.audio.max_duration is not None:
            return self.records.audio.max_duration
        decoder = self.graphs.get("encodec_decoder")
        frames = decoder.max_size("frames") if decoder else None
        return (frames or self.n_frames) / self.frame_rate

    @property
    def latent_dim(self) -> int:
        return self.records.latents.dim

    @property
    def conditioners(self) -> tp.Dict[str, tp.Any]:
        return self.records.conditioners

    @property
    def has_melody(self) -> bool:
        return "melody" in self.conditioners

    @property
    def has_drums(self) -> bool:
        return "drums" in self.conditioners

    @property
    def has_chords(self) -> bool:
        return "chords" in self.conditioners

    @property
    def defaults(self) -> tp.Dict[str, tp.Any]:
        return self.records.generation_defaults.to_dict()

    @property
    def built_on(self) -> tp.Optional[tp.Mapping[str, tp.Any]]:
        """The device / TensorRT version the engines were built on (``tensorrt.device``)."""
        return self.tensorrt.device


def load_manifest(folder: PathLike) -> ExportFolder:
    """Open an export folder (alias kept for readers of the old API)."""
    return ExportFolder.open(folder)
