"""The export folder: ``manifest.json`` + graphs + engines + tables + tokenizer + golden set.

One object owns a folder and every change to its manifest: the exporter creates it, the fp16/int8 steps,
the TensorRT builder (``jasco-export --backend trt`` and ``jasco-run build-engines``), the parity gate,
``verify`` and the benchmarks add to it through :class:`ExportFolder`, never by editing JSON.  Torch-free,
so the edge target can use it.

Manifest schema 2 (``schema_version`` "2.x"): ``graphs.<name>`` declares the graph's ``role`` (``runtime``:
the pipeline runs it; ``extra``: exported on request, checked, not used by the pipeline), its ``precisions``
and I/O contract, and ``artifacts``: ``"<backend>-<precision>"`` → ``{"file": ..., ...}``.  Artifact keys are
only ever made by :class:`ArtifactKey`.
"""
from __future__ import annotations

import json
import os
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .files import atomic_write_text

SCHEMA_VERSION = "2.0"
MANIFEST = "manifest.json"
GOLDEN_DIR = "golden"
PRECISIONS = ("fp32", "fp16", "int8")
ARTIFACT_BACKENDS = ("onnx", "tensorrt")
ROLES = ("runtime", "extra")
RUNTIME_GRAPHS = ("text_encoder", "drums_encoder", "flow_step", "encodec_decoder")

PathLike = tp.Union[str, os.PathLike]


@dataclass(frozen=True, order=True)
class ArtifactKey:
    """One artifact of an export folder: a graph in one precision for one backend."""

    graph: str
    precision: str  # fp32 | fp16 | int8
    backend: str  # onnx | tensorrt
    variant: str = ""  # an alternative graph of the same precision (benchmarks: "fused" attention)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.backend not in ARTIFACT_BACKENDS:
            raise InputError(f"unknown artifact backend {self.backend!r}; use one of {', '.join(ARTIFACT_BACKENDS)}")

    @property
    def slot(self) -> str:
        """The key inside ``graphs.<graph>.artifacts`` (e.g. ``onnx-fp16``)."""
        return f"{self.backend}-{self.precision}" + (f"+{self.variant}" if self.variant else "")

    @property
    def default_file(self) -> str:
        tag = self.precision + (f"-{self.variant}" if self.variant else "")
        return f"{self.graph}.{tag}." + ("onnx" if self.backend == "onnx" else "plan")

    def __str__(self) -> str:
        return f"{self.graph} {self.precision}{'+' + self.variant if self.variant else ''} {self.backend}"

    @classmethod
    def from_slot(cls, graph: str, slot: str) -> "ArtifactKey":
        base, _, variant = slot.partition("+")
        backend, _, precision = base.partition("-")
        return cls(graph, precision, backend, variant)


@dataclass
class Artifact:
    key: ArtifactKey
    file: str
    info: tp.Dict[str, tp.Any]


@dataclass
class GraphEntry:
    """One graph's declaration as recorded in the manifest."""

    name: str
    role: str
    precisions: tp.Tuple[str, ...]
    inputs: tp.List[tp.Dict[str, tp.Any]]
    outputs: tp.List[tp.Dict[str, tp.Any]]
    profile: tp.Dict[str, tp.Dict[str, int]]
    raw: tp.Dict[str, tp.Any]

    def max_size(self, axis: str) -> tp.Optional[int]:
        p = self.profile.get(axis)
        return int(p["max"]) if p else None

    @property
    def artifacts(self) -> tp.Dict[ArtifactKey, Artifact]:
        return {ArtifactKey.from_slot(self.name, slot): Artifact(ArtifactKey.from_slot(self.name, slot), a["file"], a)
                for slot, a in self.raw.get("artifacts", {}).items()}

    def serving_precision(self, precision: str) -> str:
        """The precision this graph runs in when ``precision`` is asked for: the graph's declared fallback
        is fp32 (e.g. drums_encoder is fp32-only; int8 exists for the flow step only)."""
        return precision if precision in self.precisions else "fp32"


# -- schema -----------------------------------------------------------------------------------------------
_Spec = tp.Dict[str, tp.Any]
_NUM = (int, float)
_SCHEMA: _Spec = {
    "schema_version": str,
    "model": {"id": str, "variant": str},
    "audio": {"sample_rate": int, "channels": int, "frame_rate": _NUM, "duration": _NUM, "n_frames": int,
              "segment_samples": int},
    "latents": {"dim": int},
    "conditioners": {"text": dict},
    "generation_defaults": {"cfg_coef_all": _NUM, "cfg_coef_txt": _NUM, "solver": str, "steps": int,
                            "rtol": _NUM, "atol": _NUM},
    "graphs": dict,
    "files": dict,
}
_GRAPH_SCHEMA: _Spec = {"role": str, "precisions": list, "inputs": list, "outputs": list, "profile": dict,
                        "artifacts": dict}


def _type_name(t: tp.Any) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _check(obj: tp.Any, schema: _Spec, where: str, path: Path) -> None:
    if not isinstance(obj, dict):
        raise InputError(f"{path}: '{where or 'manifest'}' must be an object, got {type(obj).__name__}; "
                         "the manifest is damaged — re-run jasco-export")
    for key, sub in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in obj:
            raise InputError(f"{path} lacks '{name}'; the manifest is damaged — re-run jasco-export")
        if isinstance(sub, dict):
            _check(obj[key], sub, name, path)
        elif isinstance(obj[key], bool) or not isinstance(obj[key], sub):
            raise InputError(f"{path}: '{name}' must be {_type_name(sub)}, got {obj[key]!r}; "
                             "the manifest is damaged — re-run jasco-export")


def validate_manifest(raw: tp.Any, path: Path) -> None:
    """Schema check at load time, so a damaged manifest fails before any heavy work."""
    _check(raw, {"schema_version": str}, "", path)
    version = raw["schema_version"]
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(f"{path} has schema {version}, this runtime reads {SCHEMA_VERSION}; "
                         "re-export with this version of jasco-export")
    _check(raw, _SCHEMA, "", path)
    for key in ("sample_rate", "n_frames", "segment_samples"):
        if raw["audio"][key] <= 0:
            raise InputError(f"{path}: 'audio.{key}' must be positive, got {raw['audio'][key]}; re-run jasco-export")
    for name, g in raw["graphs"].items():
        _check(g, _GRAPH_SCHEMA, f"graphs.{name}", path)
        if g["role"] not in ROLES:
            raise InputError(f"{path}: graphs.{name}.role is {g['role']!r}, expected one of {ROLES}; re-run jasco-export")
        for slot, art in g["artifacts"].items():
            try:
                ArtifactKey.from_slot(name, slot)
            except InputError as exc:
                raise InputError(f"{path}: graphs.{name}.artifacts has a bad key {slot!r} ({exc}); re-run jasco-export") from exc
            _check(art, {"file": str}, f"graphs.{name}.artifacts.{slot}", path)
    for key, rel in raw["files"].items():
        if not isinstance(rel, str):
            raise InputError(f"{path}: files.{key} must be a file name; the manifest is damaged — re-run jasco-export")


class ExportFolder:
    """An export folder and its manifest.  Open one with :meth:`open`; the exporter uses :meth:`create`."""

    def __init__(self, folder: Path, raw: tp.Dict[str, tp.Any]):
        self.folder = Path(folder)
        self.raw = raw

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: PathLike, check_files: bool = True) -> "ExportFolder":
        """Read and validate ``folder/manifest.json`` (schema, then that the files it names exist)."""
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
        validate_manifest(raw, path)
        self = cls(folder, raw)
        if check_files:
            for key, rel in raw["files"].items():
                if not (folder / rel).is_file():
                    raise InputError(f"{folder / rel} ({key}) named in the manifest is missing; re-run jasco-export")
        return self

    @classmethod
    def create(cls, folder: PathLike, raw: tp.Dict[str, tp.Any]) -> "ExportFolder":
        """A new folder's manifest (validated and written)."""
        raw = {"schema_version": SCHEMA_VERSION, **raw}
        self = cls(Path(folder), raw)
        self.save()
        return self

    def save(self) -> None:
        validate_manifest(self.raw, self.folder / MANIFEST)
        atomic_write_text(self.folder / MANIFEST, json.dumps(self.raw, indent=2) + "\n")

    def moved_to(self, folder: PathLike) -> "ExportFolder":
        """The same manifest at a new location (after the exporter renames its temp folder into place)."""
        return ExportFolder(Path(folder), self.raw)

    # -- graphs and artifacts -----------------------------------------------------------------------------
    @property
    def graphs(self) -> tp.Dict[str, GraphEntry]:
        return {name: GraphEntry(name, g["role"], tuple(g["precisions"]), g["inputs"], g["outputs"], g["profile"], g)
                for name, g in self.raw["graphs"].items()}

    def runtime_graphs(self) -> tp.List[str]:
        """The graphs the pipeline runs; a folder exported with ``--graphs`` may lack some (clear error)."""
        needed = [g for g in RUNTIME_GRAPHS if g != "drums_encoder" or self.has_drums]
        if self.has_drums and "separator" in self.conditioners["drums"]:  # drums are separated first (issue 18)
            needed.append("drums_separator")
        missing = [g for g in needed if g not in self.raw["graphs"]]
        if missing:
            raise InputError(f"{self.folder} has no {', '.join(missing)} graph (exported with --graphs?); "
                             "re-run jasco-export without --graphs to generate music from it")
        return needed

    def artifacts(self) -> tp.List[Artifact]:
        """Every artifact the manifest lists, graph by graph."""
        return [a for g in self.graphs.values() for a in g.artifacts.values()]

    def has(self, key: ArtifactKey) -> bool:
        return key.slot in self.raw["graphs"].get(key.graph, {}).get("artifacts", {})

    def artifact(self, key: ArtifactKey) -> Artifact:
        if not self.has(key):
            have = sorted(str(a.key) for a in self.artifacts() if a.key.graph == key.graph)
            raise InputError(f"{self.folder} has no {key} artifact (has: {', '.join(have) or 'none'}); "
                             "re-export it with jasco-export" if key.backend == "onnx" else
                             f"{self.folder} has no {key} engine; build it on this machine with "
                             f"`jasco-run build-engines {self.folder}` (engines are not portable)")
        a = self.raw["graphs"][key.graph]["artifacts"][key.slot]
        return Artifact(key, a["file"], a)

    def path(self, key: ArtifactKey) -> Path:
        return self.folder / self.artifact(key).file

    def add_artifact(self, key: ArtifactKey, file: tp.Optional[str] = None, save: bool = True, **info: tp.Any) -> Artifact:
        """Register ``file`` (default ``key.default_file``, which must exist in the folder) as ``key``."""
        if key.graph not in self.raw["graphs"]:
            raise InputError(f"{self.folder} declares no graph {key.graph!r}; graphs: {', '.join(self.raw['graphs'])}")
        file = file or key.default_file
        if not (self.folder / file).is_file():
            raise InputError(f"cannot register {key}: {self.folder / file} does not exist")
        entry = {"file": file, **info}
        self.raw["graphs"][key.graph]["artifacts"][key.slot] = entry
        if save:
            self.save()
        return Artifact(key, file, entry)

    def remove_artifact(self, key: ArtifactKey, save: bool = True) -> None:
        self.raw["graphs"].get(key.graph, {}).get("artifacts", {}).pop(key.slot, None)
        if save:
            self.save()

    def resolve(self, graph: str, backend: str, precision: str) -> ArtifactKey:
        """The artifact that serves ``graph`` when the runtime asks for ``precision`` on ``backend``
        ('onnx' | 'tensorrt'), following the graph's declared fp32 fallback."""
        g = self.graphs.get(graph)
        if g is None:
            raise InputError(f"{self.folder} has no {graph} graph; re-run jasco-export without --graphs")
        if backend == "tensorrt":
            return ArtifactKey(graph, "fp16" if "fp16" in g.precisions else "fp32", "tensorrt")
        return ArtifactKey(graph, g.serving_precision(precision), "onnx")

    # -- records --------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """A support file (``tables``, ``tokenizer``, ``chords_mapping``, ``parity``) named in ``files``."""
        if name not in self.raw["files"]:
            raise InputError(f"{self.folder}/{MANIFEST} names no '{name}' file; re-run jasco-export")
        return self.folder / self.raw["files"][name]

    def add_file(self, name: str, rel: str, save: bool = True) -> None:
        self.raw["files"][name] = rel
        if save:
            self.save()

    def set_record(self, key: str, value: tp.Any, save: bool = True) -> None:
        """A top-level record (``tensorrt``, ``precision``, ``golden``): whole-value replacement."""
        if key in _SCHEMA:
            raise InputError(f"'{key}' is part of the manifest's schema; it is written at export only")
        self.raw[key] = value
        if save:
            self.save()

    @property
    def golden_dir(self) -> Path:
        return self.folder / GOLDEN_DIR

    # -- accessors the pipeline uses --------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.raw["model"]["id"]

    @property
    def sample_rate(self) -> int:
        return int(self.raw["audio"]["sample_rate"])

    @property
    def n_frames(self) -> int:
        return int(self.raw["audio"]["n_frames"])

    @property
    def segment_samples(self) -> int:
        return int(self.raw["audio"]["segment_samples"])

    @property
    def frame_rate(self) -> float:
        return float(self.raw["audio"]["frame_rate"])

    @property
    def duration(self) -> float:
        return float(self.raw["audio"]["duration"])

    @property
    def latent_dim(self) -> int:
        return int(self.raw["latents"]["dim"])

    @property
    def conditioners(self) -> tp.Dict[str, tp.Any]:
        return self.raw["conditioners"]

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
        return self.raw["generation_defaults"]

    @property
    def built_on(self) -> tp.Optional[tp.Mapping[str, tp.Any]]:
        """The device / TensorRT version the engines were built on (``tensorrt.device``)."""
        return (self.raw.get("tensorrt") or {}).get("device")


def load_manifest(folder: PathLike) -> ExportFolder:
    """Open an export folder (alias kept for readers of the old API)."""
    return ExportFolder.open(folder)
