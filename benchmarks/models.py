"""What ``--model`` names, and the cached artifacts a benchmark needs (random models, ONNX exports).

``tiny`` / ``400m-random`` / ``1b-random`` are the presets of :mod:`jasco_export.tiny.presets`: the real
architecture (400M: dim 1024 × 24 layers with t5-base and encodec_32khz-sized conditioners; 1B: the
assumed model_scale=medium) with random weights, written once in the release format into an offline
hub cache under ``<cache>/models/<preset>/hub`` (the 400M one takes about 2 minutes and 2.3 GB). Any
other value is a hub id or a local checkpoint folder, loaded like a release.

Exports go to ``<cache>/exports/<model>/<precisions>`` and are reused while their manifest lists every
graph the run needs (delete the folder, or pass ``--fresh``, after changing the exporter).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import typing as tp
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
PRESETS = {"tiny": "tiny", "400m-random": "400m", "1b-random": "1b"}  # --model → jasco_export.tiny.presets preset
VARIANT = "chords-drums"


@dataclass
class ModelRef:
    arg: str  # what --model said
    load_id: str  # hub id or folder for jasco_export.get_pretrained
    preset: tp.Optional[str]
    hub_cache: tp.Optional[Path]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.load_id.strip("/"))


def _repo_folder(hub: Path, repo_id: str) -> Path:
    return hub / ("models--" + repo_id.replace("/", "--"))


def _preset_repos(preset: str) -> tp.Tuple[str, tp.List[str]]:
    from jasco_export.tiny.presets import PRESETS as TINY_PRESETS

    org = TINY_PRESETS[preset]["org"]
    return f"{org}/{VARIANT}", [f"{org}/t5", f"{org}/encodec_32khz", f"{org}/{VARIANT}"]


def resolve_model(arg: str, cache: Path = DEFAULT_CACHE) -> ModelRef:
    """Resolve ``--model``; for a preset, point HF_HUB_CACHE at a cache holding it (building it once).

    Must run before huggingface_hub / transformers are imported: they read HF_HUB_CACHE at import
    time. A hub cache already named by HF_HUB_CACHE that holds the preset (the test fixtures) is used
    as is.
    """
    if arg not in PRESETS:
        return ModelRef(arg, arg, None, Path(os.environ["HF_HUB_CACHE"]) if os.environ.get("HF_HUB_CACHE") else None)
    preset = PRESETS[arg]
    repo, wanted = _preset_repos(preset)
    env = os.environ.get("HF_HUB_CACHE")
    if env and all(_repo_folder(Path(env), r).exists() for r in wanted):
        os.environ["HF_HUB_OFFLINE"] = "1"
        return ModelRef(arg, repo, preset, Path(env))
    root = Path(cache) / "models" / preset
    hub = root / "hub"
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as hc

        if Path(hc.HF_HUB_CACHE).resolve() != hub.resolve():
            raise RuntimeError(f"huggingface_hub was imported with HF_HUB_CACHE={hc.HF_HUB_CACHE}; run the "
                               f"benchmark in a fresh process (or set HF_HUB_CACHE={hub} before importing it)")
    os.environ["HF_HUB_CACHE"] = str(hub)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if not all(_repo_folder(hub, r).exists() for r in wanted):
        from jasco_export.tiny.presets import make_tiny_models

        logger.info("writing the %s random model to %s (once; cached)", arg, hub)
        make_tiny_models(root, preset=preset, variants=(VARIANT,))
    return ModelRef(arg, repo, preset, hub)


def ensure_export(model: ModelRef, graphs: tp.Sequence[str], precisions: tp.Sequence[str], cache: Path = DEFAULT_CACHE,
                  backend: str = "onnx", fresh: bool = False, parity: bool = False) -> Path:
    """An export folder of ``model`` holding at least ``graphs`` in ``precisions`` (fp32 always; fp16, int8 as
    the exporter builds them), reused when cached. The folder is read through its ``ExportFolder``; a cached
    folder that does not open (damaged, older schema) is exported again."""
    from jasco_export.exporter import ExportOptions, run_export
    from jasco_runtime.errors import InputError
    from jasco_runtime.export_folder import ExportFolder

    precs = ("fp32",) + tuple(p for p in ("fp16", "int8") if p in precisions)
    folder = Path(cache) / "exports" / model.slug / ("+".join(precs) + ("-trt" if backend != "onnx" else ""))
    have: tp.Set[str] = set()
    if (folder / "manifest.json").is_file() and not fresh:
        try:
            have = set(ExportFolder.open(folder).graphs)
        except InputError as exc:
            logger.info("re-exporting the cached %s: %s", folder, exc)
        if have and set(graphs) <= have:
            return folder
    want = sorted(set(graphs) | have)
    logger.info("exporting %s (%s; %s) to %s", model.load_id, ", ".join(want), "+".join(precs), folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # the benchmark checks its own outputs against PyTorch (output_rel_l2); --parity also runs the gate
    run_export(ExportOptions(model=model.load_id, out=folder, precisions=precs, backend=backend, graphs=want,
                             end_to_end=parity, parity_gate=parity, run_parity=parity, force=True))
    return folder
