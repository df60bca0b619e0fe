"""The manifest's records: each block of ``manifest.json`` as a dataclass with ``from_dict`` (validating, a damaged
field is one :class:`ManifestError` naming it) and ``to_dict``; :class:`Manifest` is the whole document."""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..files import sha256_file
from .fields import _NUM, ManifestError, _drop_none, _Fields
from .vocabulary import EXPORT_TARGETS, PRECISIONS, ArtifactKey, Backend, Precision

SCHEMA_VERSION = "2.1"
ROLES = ("runtime", "extra")


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
