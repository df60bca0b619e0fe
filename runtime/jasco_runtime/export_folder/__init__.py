"""The export folder: ``manifest.json`` + graphs + engines + tables + tokenizer + golden set.

One object owns a folder and every change to its manifest: the exporter creates it, the fp16/int8 steps,
the TensorRT builder (``jasco-export --backend tensorrt`` and ``jasco-run build-engines``), the parity gate,
``verify`` and the benchmarks add to it through :class:`ExportFolder`, never by editing JSON.  This module is
also the manifest's one schema owner: each block of the document is a typed record (:class:`ModelRecord`,
:class:`AudioRecord`, :class:`GraphRecord` with its :class:`ArtifactRecord` s, :class:`TensorRTRecord`,
:class:`GoldenRecord`, :class:`ExportRecord`, gathered in :class:`Manifest`) with ``from_dict``/``to_dict``,
validated when the folder opens (a damaged field is one :class:`InputError` line naming it).  The vocabulary
shared by every CLI lives here too: :class:`Backend` and :class:`Precision`.  Torch-free, so the edge target
can use it.  Modules: :mod:`.vocabulary` (Backend, Precision, ArtifactKey), :mod:`.fields` (typed JSON reads),
:mod:`.records` (the records and :class:`Manifest`), :mod:`.folder` (:class:`ExportFolder`); import from the
package.

Manifest schema 2 (``schema_version`` "2.x"): ``graphs.<name>`` declares the graph's ``role`` (``runtime``:
the pipeline runs it; ``extra``: exported on request, checked, not used by the pipeline), its ``precisions``
and I/O contract, and ``artifacts``: ``"<artifact backend>-<precision>"`` → ``{"file": ..., ...}``.  Artifact
keys are only ever made by :class:`ArtifactKey`.  Schema 2.1 adds ``digests`` (size + sha256 of each artifact's
files), ``audio.max_duration`` and ``export.runtime_graphs``; 2.0 folders still open (they are not checked
against digests, and their maximum duration is read from the decoder's profile).
"""
from __future__ import annotations

from .fields import ManifestError
from .folder import GOLDEN_DIR, MANIFEST, ExportFolder, PathLike, is_export_folder, load_manifest
from .records import (ROLES, SCHEMA_VERSION, Artifact, ArtifactRecord, AudioRecord, AxisRecord, CompatibilityRecord,
                      DefaultsRecord, Digest, DimsRecord, ExportRecord, GoldenE2ERecord, GoldenRecord, GraphEntry,
                      GraphRecord, LatentsRecord, Manifest, ModelRecord, TensorRecord, TensorRTRecord, validate_manifest)
from .vocabulary import (ARTIFACT_BACKENDS, BACKEND_SPELLINGS, EXPORT_TARGETS, PRECISIONS, ArtifactKey, Backend,
                         Precision)

__all__ = ["ARTIFACT_BACKENDS", "BACKEND_SPELLINGS", "EXPORT_TARGETS", "GOLDEN_DIR", "MANIFEST", "PRECISIONS", "ROLES",
           "SCHEMA_VERSION", "Artifact", "ArtifactKey", "ArtifactRecord", "AudioRecord", "AxisRecord", "Backend",
           "CompatibilityRecord", "DefaultsRecord", "Digest", "DimsRecord", "ExportFolder", "ExportRecord",
           "GoldenE2ERecord", "GoldenRecord", "GraphEntry", "GraphRecord", "LatentsRecord", "Manifest",
           "ManifestError", "ModelRecord", "PathLike", "Precision", "TensorRecord", "TensorRTRecord",
           "is_export_folder", "load_manifest", "validate_manifest"]
