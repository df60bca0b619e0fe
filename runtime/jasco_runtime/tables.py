"""``tables.npz``: the torch-free condition tables (chords embedding, melody projection, null/silence drums)."""
from __future__ import annotations

import typing as tp
import zipfile
from pathlib import Path

import numpy as np

from .errors import InputError, first_line


def load_tables(path: Path) -> tp.Dict[str, np.ndarray]:
    """Every array of ``tables.npz``, loaded eagerly (pickles refused); a damaged file is one clear error."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{path} is damaged ({type(exc).__name__}: {first_line(exc)}); "
                         "re-run jasco-export or copy the folder again") from exc
