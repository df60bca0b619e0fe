"""``jasco-export --separator``: which htdemucs (if any) an export includes as its ``drums_separator`` graph.

audiocraft separates every drums input with htdemucs (audiocraft/modules/jasco_conditioners.py); an export
with a separator makes the runtime do the same.  Values:

* ``auto`` (default): ``htdemucs`` when demucs is installed and its weights are already on this machine
  (Hugging Face cache ``adefossez/HTDemucs`` or torch hub ``checkpoints/955717e8-*.th``; nothing is
  downloaded), otherwise no separator, said in one line;
* a demucs model name (``htdemucs``, ``hf://org/htdemucs``: demucs' own loader, which may download) or a
  ``.safetensors`` file in demucs' Hugging Face format;
* ``none``: drums are always taken as already separated stems.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

from .errors import InputError
from .reference.separation import DEFAULT, SeparationUnavailable, load_demucs, single_model

AUTO, NONE = "auto", "none"
HTDEMUCS_SIG = "955717e8"
HF_REPO = "adefossez/HTDemucs"


@dataclass
class Separator:
    name: str
    bag: tp.Any  # the demucs BagOfModels (what apply_model gets, as in audiocraft)

    @property
    def model(self) -> tp.Any:
        return single_model(self.bag)


def htdemucs_is_local() -> tp.Optional[str]:
    """None when demucs and htdemucs' weights are on this machine, else why not."""
    import importlib.util

    if importlib.util.find_spec("demucs") is None:
        return "demucs is not installed (pip install demucs)"
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(HF_REPO, f"{HTDEMUCS_SIG}.safetensors"), str):
            return None
    except Exception:  # noqa: BLE001 - no hub library / unusable cache: try the torch hub cache
        pass
    import torch.hub
    from pathlib import Path

    if any((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{HTDEMUCS_SIG}-*.th")):
        return None
    return f"htdemucs weights are not in the Hugging Face cache ({HF_REPO}) nor the torch hub cache"


def resolve_separator(option: tp.Optional[str], has_drums: bool, log: tp.Callable[[str], None]) -> tp.Optional[Separator]:
    """The separator an export includes (None: drums are taken as stems); bad values raise InputError."""
    option = (option or AUTO).strip()
    if option == NONE:
        return None
    if not has_drums:
        if option != AUTO:
            raise InputError(f"--separator {option}: this model has no drums conditioner; drop --separator")
        return None
    if option == AUTO:
        why = htdemucs_is_local()
        if why:
            log(f"no drum separator: {why}; drums inputs will be taken as already separated stems "
                "(--separator htdemucs|PATH to add one)")
            return None
        option = DEFAULT
    try:
        sep = Separator(option, load_demucs(option))
        sep.model  # a single htdemucs (bags of several models are refused)
    except SeparationUnavailable as exc:
        raise InputError(f"--separator {option}: {exc}") from exc
    if type(sep.model).__name__ != "HTDemucs":
        raise InputError(f"--separator {option} is a {type(sep.model).__name__}; the exported separator must be an "
                         "HTDemucs (htdemucs)")
    return sep
