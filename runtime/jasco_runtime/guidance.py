"""Multi-source classifier-free guidance (JASCO paper §3.3; audiocraft/models/flow_matching.py).

Three terms: **All** keeps every condition (weight ``cfg_coef_all``), **Text** keeps only the
description (weight ``cfg_coef_txt``), **Null** drops everything (weight ``1 − all − txt``). The
guided vector field is ``v = Σ wᵢ · v(z, t | condsᵢ)``, evaluated as one batch whose rows are
term-major (rows ``[i·B, (i+1)·B)`` belong to term ``i``).
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import numpy as np

MIN_WEIGHT = 1e-6


@dataclass(frozen=True)
class CFGTerm:
    """One guidance term: which conditions it keeps, and its weight."""

    kind: str  # "all" | "text" | "null"
    weight: float

    @property
    def drops_description(self) -> bool:
        return self.kind == "null"

    @property
    def drops_chords(self) -> bool:
        return self.kind != "all"

    @property
    def drops_drums(self) -> bool:
        return self.kind != "all"

    def drops_melody(self, chords_given: bool) -> bool:
        """Melody is dropped with the other symbolic conditions, except that audiocraft's symbolic
        dropout returns early when the chords are absent (BEHAVIOUR.md §2): then the melody stays."""
        return self.kind != "all" and chords_given


def cfg_terms(cfg_coef_all: float, cfg_coef_txt: float, min_weight: float = MIN_WEIGHT) -> tp.List[CFGTerm]:
    """The terms audiocraft keeps for these coefficients, in batch order.

    audiocraft removes negligible terms with ``list.remove`` *while iterating over the same list*, so
    the term after a removed one is never looked at: (0, 0) keeps [Text 0, Null 1]; (1, 0) keeps
    [All 1, Null 0]. The same loop is run here on purpose, to keep the same terms and batch size.
    """
    terms = [CFGTerm("all", float(cfg_coef_all)), CFGTerm("text", float(cfg_coef_txt))]
    terms.append(CFGTerm("null", 1 - sum(t.weight for t in terms)))
    for term in terms:  # noqa: B007 - mutating while iterating reproduces audiocraft's quirk
        if abs(term.weight) < min_weight:
            terms.remove(term)
    return terms


def combine_vector_fields(v: np.ndarray, terms: tp.Sequence[CFGTerm]) -> np.ndarray:
    """Term-major batch of vector fields [n·B, T, D] → guided field [B, T, D].

    A single term returns its field as is, unweighted (audiocraft ``_multi_source_cfg_postprocess``).
    """
    n = len(terms)
    if n <= 1:
        return v
    chunks = np.split(v, n, axis=0)
    out = terms[0].weight * chunks[0]
    for term, chunk in zip(terms[1:], chunks[1:]):
        out = out + term.weight * chunk
    return out.astype(v.dtype, copy=False)
