"""Where the extraction's third-party pieces live, found without importing their Python packages.

- Chordino: the NNLS-chroma Vamp plugin bundled in ``chord-extractor`` (``chord_extractor/_lib/nnls-chroma.so``),
  run through the ``vamp`` host directly (chord-extractor's own Python wrapper needs librosa and ``pkg_resources``
  and declares Python < 3.12; its plugin file does not care).
- The pitch model: ``basic_pitch/saved_models/icassp_2022/nmp.onnx`` from ``basic-pitch`` installed with
  ``--no-deps`` (its metadata pulls TensorFlow on Linux; the ONNX file runs on onnxruntime alone). Importing
  ``basic_pitch`` would probe for TensorFlow/CoreML/TFLite, so the file is located through the package metadata.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import typing as tp
from pathlib import Path

from ..errors import JascoError

INSTALL_HINT = ("install the 'extract' extra: pip install numpy setuptools wheel && pip install --no-build-isolation "
                "vamp && pip install --no-deps chord-extractor basic-pitch && pip install 'jasco-trt[extract]' "
                "(docs/extract.md)")
ENV_CHORDINO = "JASCO_CHORDINO_PLUGIN"  # a folder holding nnls-chroma.so (overrides chord-extractor's copy)
ENV_PITCH_MODEL = "JASCO_PITCH_MODEL"  # a basic-pitch nmp.onnx file (overrides basic-pitch's copy)


class MissingExtra(JascoError):
    """A piece of the ``extract`` extra is not installed."""


def _packaged_file(dist: str, name: str, parent: str) -> tp.Optional[Path]:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == name and f.parent.name == parent:
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    return None


def chordino_plugin_dir() -> Path:
    """The folder holding ``nnls-chroma.so`` (Chordino), for ``VAMP_PATH``."""
    env = os.environ.get(ENV_CHORDINO)
    if env:
        if not (Path(env) / "nnls-chroma.so").is_file():
            raise MissingExtra(f"{ENV_CHORDINO}={env} holds no nnls-chroma.so; point it at the folder with Chordino's "
                               "plugin or unset it")
        return Path(env)
    path = _packaged_file("chord-extractor", "nnls-chroma.so", "_lib")
    if path is None:
        raise MissingExtra(f"chord extraction needs Chordino (chord-extractor's bundled plugin); {INSTALL_HINT}")
    return path.parent


def vamp_module() -> tp.Any:
    """The ``vamp`` host module, with ``VAMP_PATH`` pointing at Chordino's folder."""
    plugin_dir = chordino_plugin_dir()
    if importlib.util.find_spec("vamp") is None:
        raise MissingExtra(f"chord extraction needs the vamp host; {INSTALL_HINT}")
    paths = [p for p in os.environ.get("VAMP_PATH", "").split(os.pathsep) if p]
    if str(plugin_dir) not in paths:
        # the host reads VAMP_PATH when it lists plugins (each vamp.collect call)
        os.environ["VAMP_PATH"] = os.pathsep.join([str(plugin_dir)] + paths)
    import vamp

    return vamp


def pitch_model_path() -> Path:
    """basic-pitch's ICASSP-2022 model as ONNX (``nmp.onnx``)."""
    env = os.environ.get(ENV_PITCH_MODEL)
    if env:
        if not Path(env).is_file():
            raise MissingExtra(f"{ENV_PITCH_MODEL}={env} is not a file; point it at basic-pitch's nmp.onnx or unset it")
        return Path(env)
    path = _packaged_file("basic-pitch", "nmp.onnx", "icassp_2022")
    if path is None:
        raise MissingExtra(f"melody extraction needs basic-pitch's nmp.onnx; {INSTALL_HINT}")
    return path


def onnxruntime_module() -> tp.Any:
    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingExtra(f"melody extraction needs onnxruntime; {INSTALL_HINT}")
    import onnxruntime

    return onnxruntime
