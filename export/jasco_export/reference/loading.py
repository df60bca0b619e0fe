"""Resolve and load JASCO release checkpoints (audiocraft/models/loaders.py ``load_jasco_model``).

A model id goes through huggingface_hub (HF_HUB_CACHE, HF_HUB_OFFLINE and ``revision`` honoured); a path
is a local directory holding ``state_dict.bin`` and ``compression_state_dict.bin``.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import pickle
import re
import typing as tp
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jasco_runtime.errors import first_line
from jasco_runtime.files import sha256_file

from ..errors import CheckpointError, ModelNotFoundError

logger = logging.getLogger(__name__)

STATE_DICT = "state_dict.bin"
COMPRESSION_STATE_DICT = "compression_state_dict.bin"
CHORDS_MAPPING = "chord_to_index_mapping.pkl"
_DATA = Path(__file__).resolve().parent.parent / "data"
KNOWN_COMPRESSION_CONFIGS = {"facebook/encodec_32khz": _DATA / "encodec_32khz.config.json"}
"""Configs of compression models JASCO releases point to.  Only the architecture is needed: every
EnCodec weight is overwritten by the copy inside state_dict.bin (BEHAVIOUR.md §12)."""


@dataclass
class ModelFiles:
    """Where a model's files are, and what identifies them (for manifests)."""

    name: str
    state_dict: Path
    compression_state_dict: Path
    folder: Path
    repo_id: tp.Optional[str] = None
    revision: tp.Optional[str] = None
    extra: tp.Dict[str, Path] = field(default_factory=dict)

    def sha256(self) -> tp.Dict[str, str]:
        return {p.name: sha256_file(p) for p in (self.state_dict, self.compression_state_dict)}


def _hub_download(repo_id: str, filename: str, revision: tp.Optional[str]) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelNotFoundError(f"model {repo_id!r} (revision {revision or 'main'}) not found on the hub; "
                                 "check the id or pass a local directory") from exc
    except LocalEntryNotFoundError as exc:
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface/hub"
        raise ModelNotFoundError(f"{filename} of {repo_id!r} is not in the Hugging Face cache ({cache}) and the hub "
                                 "is unreachable or HF_HUB_OFFLINE=1; download it first or pass a local directory") from exc
    except EntryNotFoundError as exc:
        raise ModelNotFoundError(f"{repo_id!r} has no {filename}; is it a JASCO release?") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelNotFoundError(f"could not fetch {filename} of {repo_id!r}: {exc}") from exc


def resolve_model(name_or_dir: tp.Union[str, os.PathLike], revision: tp.Optional[str] = None) -> ModelFiles:
    """Find ``state_dict.bin`` and ``compression_state_dict.bin`` for a hub id or a local directory."""
    name = str(name_or_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        files = {f: path / f for f in (STATE_DICT, COMPRESSION_STATE_DICT)}
        for f, p in files.items():
            if not p.is_file():
                raise ModelNotFoundError(f"{path} has no {f}; a JASCO model folder holds {STATE_DICT} and "
                                         f"{COMPRESSION_STATE_DICT}")
        return ModelFiles(name, files[STATE_DICT], files[COMPRESSION_STATE_DICT], path)
    if path.exists() or name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelNotFoundError(f"{name} is not a model directory nor a hub id like facebook/jasco-chords-drums-400M")
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise ModelNotFoundError(f"{name!r} is not a valid hub id (expected org/name) nor an existing directory")
    sd = _hub_download(name, STATE_DICT, revision)
    comp = _hub_download(name, COMPRESSION_STATE_DICT, revision)
    return ModelFiles(name, sd, comp, sd.parent, repo_id=name, revision=revision or "main")


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _refused_global(exc: pickle.UnpicklingError) -> tp.Optional[str]:
    """The global (class or function) torch's ``weights_only`` unpickler refused to import, or None when the
    pickle is damaged or merely unsupported.  torch words it "... unsupported GLOBAL posix.system ..." or
    "Unsupported global: GLOBAL __main__.Obj ..."."""
    text = str(exc)
    m = _REFUSED_GLOBAL.search(text) if "Weights only load failed" in text else None
    return m.group(1) if m else None


def _detail(exc: BaseException) -> str:
    """First line of an error; for torch's weights_only failures the specific reason, not its boilerplate
    paragraph (which suggests ``weights_only=False``)."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        text = paragraphs[1] if len(paragraphs) > 1 else "unsupported pickle content"
    return f"{type(exc).__name__}: {first_line(RuntimeError(text), 200)}" if text else type(exc).__name__


def load_checkpoint(path: Path) -> tp.Dict[str, tp.Any]:
    """``torch.load(weights_only=True)`` with a one-line error for corrupt or foreign files; a pickle that
    would import code is refused as such (never loaded with ``weights_only=False``)."""
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, foreign formats, refused globals
        refused = _refused_global(exc) if isinstance(exc, pickle.UnpicklingError) else None
        if refused is not None:
            raise CheckpointError(f"{path} was refused because it contains code or Python objects that are not plain "
                                  f"tensors (it imports {refused}); a release checkpoint holds only tensors — get it "
                                  "from the model's official page") from exc
        raise CheckpointError(f"cannot read {path} ({_detail(exc)}); the file is corrupt or not a checkpoint — "
                              "re-download it") from exc
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{path} holds a {type(pkg).__name__}, not a checkpoint dict")
    return pkg


def read_release(path: Path, mmap: bool = True) -> tp.Tuple[tp.Dict[str, torch.Tensor], str]:
    """(``best_state``, ``xp.cfg`` YAML text) of a release ``state_dict.bin``.

    ``mmap``: the tensors are views of the memory-mapped file (zip checkpoints, i.e. every
    ``torch.save`` since torch 1.6), so loading costs no copy of the weights; see :func:`strict_load`
    with ``assign=True`` to make them the model's parameters.
    """
    with _mmap_loads(mmap and zipfile.is_zipfile(path)):
        pkg = load_checkpoint(path)
    missing = [k for k in ("best_state", "xp.cfg") if k not in pkg]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; expected an audiocraft release state_dict.bin "
                              "with 'best_state' and 'xp.cfg'")
    cfg = pkg["xp.cfg"]
    if not isinstance(cfg, str):
        cfg = json.dumps(cfg) if isinstance(cfg, dict) else str(cfg)
    return dict(pkg["best_state"]), cfg


@contextlib.contextmanager
def _mmap_loads(enabled: bool) -> tp.Iterator[None]:
    """``torch.load`` calls inside memory-map the file (torch.utils.serialization.config.load.mmap)."""
    from torch.utils.serialization import config

    saved = config.load.mmap
    config.load.mmap = enabled
    try:
        yield
    finally:
        config.load.mmap = saved


# -- weight-norm key styles -------------------------------------------------------------------------
_OLD_TO_NEW = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}


def normalize_weight_norm_keys(state: tp.Dict[str, torch.Tensor], target_keys: tp.Iterable[str]) -> tp.Dict[str, torch.Tensor]:
    """Rename EnCodec weight-norm keys to the style the installed transformers/torch uses.

    Older versions saved ``weight_g``/``weight_v``; newer ones ``parametrizations.weight.original0/1``
    (BEHAVIOUR.md §12).  Both hold the same tensors.
    """
    targets = set(target_keys)
    out: tp.Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k not in targets:
            for old, new in _OLD_TO_NEW.items():
                if k.endswith(old) and k[: -len(old)] + new in targets:
                    k = k[: -len(old)] + new
                    break
                if k.endswith(new) and k[: -len(new)] + old in targets:
                    k = k[: -len(new)] + old
                    break
        out[k] = v
    return out


def _normalize_attention_keys(state: tp.Dict[str, torch.Tensor], targets: tp.Set[str]) -> tp.Dict[str, torch.Tensor]:
    """Checkpoints of non-"custom" attention store ``self_attn.mha.in_proj_weight``; map to our names."""
    out = {}
    for k, v in state.items():
        if ".mha." in k and k not in targets and k.replace(".mha.", ".") in targets:
            k = k.replace(".mha.", ".")
        out[k] = v
    return out


def strict_load(module: torch.nn.Module, state: tp.Dict[str, torch.Tensor], what: str = "checkpoint",
                assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with a readable diff of missing / unexpected / mis-shaped keys.

    ``assign``: the checkpoint tensors become the module's parameters and buffers (cast to the module's
    dtype where they differ) instead of being copied into them; for a module built on the meta device,
    so the weights exist once.
    """
    own = module.state_dict()
    state = _normalize_attention_keys(normalize_weight_norm_keys(state, own.keys()), set(own))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def show(keys: tp.List[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {show(shapes)}")
        raise CheckpointError(f"{what} does not match the architecture in its xp.cfg — " + "; ".join(parts))
    if assign:
        state = {k: v if v.dtype == own[k].dtype else v.to(own[k].dtype) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=assign)
    if assign:
        meta = [k for k, v in itertools.chain(module.named_parameters(), module.named_buffers()) if v.is_meta]
        if meta:  # tensors outside the state dict (non-persistent buffers) cannot come from the checkpoint
            raise CheckpointError(f"{what}: {len(meta)} tensors not in the checkpoint stay unset ({meta[0]}, ...)")


# -- external models --------------------------------------------------------------------------------
def load_compression_model(path: Path, revision: tp.Optional[str] = None) -> torch.nn.Module:
    """EnCodec from ``compression_state_dict.bin``: a ``{'pretrained': id}`` pointer → transformers.

    Only the architecture is instantiated here; JASCO's state dict carries all EnCodec weights.
    """
    from transformers import EncodecConfig, EncodecModel

    pkg = load_checkpoint(path)
    if "pretrained" in pkg:
        ref = str(pkg["pretrained"])
        try:
            config = EncodecConfig.from_pretrained(ref)
        except Exception as exc:
            known = KNOWN_COMPRESSION_CONFIGS.get(ref)
            if known is None or not known.is_file():
                raise ModelNotFoundError(f"compression model {ref!r} (named in {path.name}) is not available offline "
                                         f"({type(exc).__name__}); put it in the Hugging Face cache") from exc
            logger.info("using the bundled %s config for %s (weights come from state_dict.bin)", known.name, ref)
            config = EncodecConfig.from_json_file(str(known))
        return EncodecModel(config).eval()
    if "best_state" in pkg and "xp.cfg" in pkg:
        raise CheckpointError(f"{path.name} holds a full audiocraft EnCodec (SEANet layout), not a pointer to a "
                              "transformers EnCodec; JASCO releases use {'pretrained': 'facebook/encodec_32khz'} — "
                              "converting audiocraft EnCodec checkpoints is not supported")
    raise CheckpointError(f"{path.name} has neither 'pretrained' nor 'best_state'; not a compression checkpoint")


def load_t5(name: str) -> tp.Tuple[torch.nn.Module, tp.Any]:
    """T5 encoder + tokenizer by hub id or directory (audiocraft T5Conditioner loads them by name)."""
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        t5 = T5EncoderModel.from_pretrained(name, dtype=torch.float32)
    except Exception as exc:
        raise ModelNotFoundError(f"T5 model {name!r} could not be loaded ({type(exc).__name__}: "
                                 f"{first_line(exc, 160)}); put it in the Hugging Face cache or pass "
                                 "--t5 DIR") from exc
    return t5.eval(), tokenizer


def find_chords_mapping(files: ModelFiles, explicit: tp.Optional[tp.Union[str, os.PathLike]] = None) -> Path:
    """Chord mapping pickle: explicit path, else next to the checkpoint (folder or hub snapshot)."""
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"chords mapping {p} does not exist")
        return p
    for candidate in (files.folder / CHORDS_MAPPING, files.folder / "chords_mapping.json"):
        if candidate.is_file():
            return candidate
    if files.repo_id is not None:
        try:
            return _hub_download(files.repo_id, CHORDS_MAPPING, files.revision)
        except ModelNotFoundError:
            pass
    raise ModelNotFoundError(f"no {CHORDS_MAPPING} found for {files.name}; it ships with audiocraft "
                             f"(assets/{CHORDS_MAPPING}) — pass its path with --chords-mapping")
