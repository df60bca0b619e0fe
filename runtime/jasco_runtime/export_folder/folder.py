"""An export folder and every change to its manifest (:class:`ExportFolder`)."""
from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text, sha256_file
from .records import (SCHEMA_VERSION, Artifact, ArtifactRecord, DimsRecord, ExportRecord, GoldenRecord, GraphRecord,
                      Manifest, ModelRecord, AudioRecord, TensorRTRecord, validate_manifest)
from .vocabulary import ArtifactKey, Backend

MANIFEST = "manifest.json"
GOLDEN_DIR = "golden"
# Schema 2.0 folders do not record which graphs the pipeline needs (2.1: ``export.runtime_graphs``).
OPTIONAL_RUNTIME_GRAPHS = ("solver_step",)
"""Runtime graphs a folder may lack: without ``solver_step`` (exports before it, or ``--graphs`` without it) the
ODE loop runs on the host (:mod:`jasco_runtime.device_solve`)."""
_SCHEMA_2_0_RUNTIME_GRAPHS = ("text_encoder", "drums_encoder", "flow_step", "encodec_decoder")

PathLike = tp.Union[str, os.PathLike]


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
        declared = tuple(g for g in declared if g in self.graphs or g not in OPTIONAL_RUNTIME_GRAPHS)
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
