"""``manifest.json``: the contract between ``jasco-export`` and the runtime.

Schema-versioned; the runtime refuses a manifest of another major version with a clear message.
"""
from __future__ import annotations

import json
import os
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

SCHEMA_VERSION = "1.0"
MANIFEST = "manifest.json"


@dataclass
class GraphEntry:
    """One exported graph: files per precision/backend and its I/O contract."""

    name: str
    files: tp.Dict[str, str]  # "onnx-fp32" | "onnx-fp16" | "trt-fp16" → file name
    inputs: tp.List[tp.Dict[str, tp.Any]]
    outputs: tp.List[tp.Dict[str, tp.Any]]
    profile: tp.Dict[str, tp.Dict[str, int]] = field(default_factory=dict)

    def max_size(self, axis: str) -> tp.Optional[int]:
        p = self.profile.get(axis)
        return int(p["max"]) if p else None


@dataclass
class Manifest:
    """Parsed manifest with the fields the runtime uses; ``raw`` keeps everything."""

    folder: Path
    raw: tp.Dict[str, tp.Any]
    graphs: tp.Dict[str, GraphEntry]

    # convenient accessors --------------------------------------------------------------------------
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

    def path(self, key: str) -> Path:
        return self.folder / self.raw["files"][key]


def load_manifest(folder: tp.Union[str, os.PathLike]) -> Manifest:
    """Read and validate ``folder/manifest.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"engines folder {folder} does not exist; create it with `jasco-export --model ... --out {folder}`")
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder} has no {MANIFEST}; it is not a jasco-export output folder (re-run jasco-export)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); re-run jasco-export") from exc
    version = str(raw.get("schema_version", "?"))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(f"{path} has schema {version}, this runtime reads {SCHEMA_VERSION}; re-export with this version of jasco-export")
    for key in ("audio", "latents", "conditioners", "graphs", "files", "generation_defaults"):
        if key not in raw:
            raise InputError(f"{path} lacks '{key}'; the manifest is damaged — re-run jasco-export")
    graphs = {name: GraphEntry(name=name, files=g.get("files", {}), inputs=g["inputs"], outputs=g["outputs"],
                               profile=g.get("profile", {}))
              for name, g in raw["graphs"].items()}
    for key, rel in raw["files"].items():
        if not (folder / rel).is_file():
            raise InputError(f"{folder / rel} ({key}) named in the manifest is missing; re-run jasco-export")
    return Manifest(folder, raw, graphs)
