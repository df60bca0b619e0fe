"""The engine seam: the pipeline calls ``engine(**inputs) -> outputs`` and knows nothing else."""
from __future__ import annotations

import typing as tp

import numpy as np


class Engine(tp.Protocol):
    """One graph on one backend.  Inputs/outputs are numpy arrays keyed by the manifest's names."""

    name: str
    input_names: tp.List[str]
    output_names: tp.List[str]

    def __call__(self, **inputs: np.ndarray) -> tp.Dict[str, np.ndarray]:
        ...
