"""Multi-source classifier-free guidance of the reference (JASCO paper §3.3).

Ported from audiocraft/models/flow_matching.py (``AllCFGTerm`` / ``TextCFGTerm`` / ``NullCFGTerm`` and
``FlowMatchingModel._multi_source_cfg_preprocess``; the weighted sum of ``_multi_source_cfg_postprocess``
is ``JASCO.guided_vector_field``). Kept apart from ``jasco_runtime.guidance`` so that runtime-vs-reference
parity also checks the terms.

A term here records *which* conditions it drops instead of holding nullified copies of them; the
reference's ``JASCO.condition_inputs`` applies the drops (BEHAVIOUR.md §2–4). The attribute names
(``kind``, ``weight``, ``drops_*``) are the ones the runtime's terms have, so either kind of term can
drive either implementation in tests.
"""
from __future__ import annotations

import typing as tp


class CFGTerm:
    """One guidance term: a weight and the conditions it keeps (audiocraft ``CFGTerm``).

    Plain class (identity equality, as audiocraft's): ``list.remove`` removes this very object.
    """

    kind: str = ""
    drops_text: bool = False  # audiocraft cond type "text"
    drops_wav: bool = False  # "wav": the drums
    drops_symbolic: bool = False  # "symbolic": chords and melody

    def __init__(self, weight: float):
        self.weight = weight

    @property
    def drops_description(self) -> bool:
        return self.drops_text

    @property
    def drops_chords(self) -> bool:
        return self.drops_symbolic

    @property
    def drops_drums(self) -> bool:
        return self.drops_wav

    def drops_melody(self, chords_given: bool) -> bool:
        """audiocraft ``dropout_symbolic_conditions`` returns early when the frame chords are ≤ 1 long
        (no chords given), so the melody is then kept even by the terms that drop symbolic conditions."""
        return self.drops_symbolic and chords_given

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight!r})"


class AllCFGTerm(CFGTerm):
    """Keeps every condition."""

    kind = "all"


class TextCFGTerm(CFGTerm):
    """Keeps the description only: the model's symbolic and wav attribute dropouts are applied with p=1."""

    kind = "text"
    drops_wav = True
    drops_symbolic = True


class NullCFGTerm(CFGTerm):
    """Drops everything: ``ClassifierFreeGuidanceDropout(p=1.0)`` over wav, text and symbolic."""

    kind = "null"
    drops_text = True
    drops_wav = True
    drops_symbolic = True


def cfg_terms(cfg_coef_all: float, cfg_coef_txt: float, min_weight: float = 1e-6) -> tp.List[CFGTerm]:
    """The CFG terms of ``_multi_source_cfg_preprocess``, in batch order (BEHAVIOUR.md §1).

    Null gets ``1 − Σ`` of the other weights; terms with ``|w| < min_weight`` are removed with
    ``list.remove`` while the same list is iterated, as audiocraft does, so the term right after a
    removed one is never examined and survives even with weight 0: (1, 0) → [All 1, Null 0].
    """
    terms: tp.List[CFGTerm] = [AllCFGTerm(weight=cfg_coef_all), TextCFGTerm(weight=cfg_coef_txt)]
    terms.append(NullCFGTerm(weight=1 - sum([ct.weight for ct in terms])))
    for ct in terms:  # noqa: B007 - removing while iterating is audiocraft's behaviour, kept on purpose
        if abs(ct.weight) < min_weight:
            terms.remove(ct)
    return terms

