"""Multi-source CFG terms and their combination (jasco_runtime.guidance)."""
from __future__ import annotations

import numpy as np
import pytest

from jasco_runtime.guidance import cfg_terms, combine_vector_fields


@pytest.mark.parametrize("coefs, expected", [
    ((5.0, 0.0), [("all", 5.0), ("null", -4.0)]),
    ((1.0, 0.0), [("all", 1.0), ("null", 0.0)]),      # Null (weight 0) survives: it follows a removed term
    ((0.0, 1.0), [("text", 1.0)]),
    ((0.0, 0.0), [("text", 0.0), ("null", 1.0)]),     # Text (weight 0) survives the same way
    ((2.0, -1.0), [("all", 2.0), ("text", -1.0)]),
    ((1.25, 2.5), [("all", 1.25), ("text", 2.5), ("null", -2.75)]),
])
def test_terms_follow_audiocrafts_removal_quirk(coefs, expected):
    """BEHAVIOUR §1: list.remove while iterating skips the element after a removed one."""
    got = [(t.kind, t.weight) for t in cfg_terms(*coefs)]
    assert [k for k, _ in got] == [k for k, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], abs=1e-12)


def test_what_each_term_drops():
    all_, text, null = cfg_terms(1.25, 2.5)
    assert not (all_.drops_description or all_.drops_chords or all_.drops_drums or all_.drops_melody(True))
    assert not text.drops_description and text.drops_chords and text.drops_drums and text.drops_melody(True)
    assert null.drops_description and null.drops_chords and null.drops_drums and null.drops_melody(True)
    # no chords → audiocraft's symbolic dropout returns early and keeps the melody (BEHAVIOUR §2)
    assert not text.drops_melody(False) and not null.drops_melody(False)


def test_combination_is_the_weighted_sum_of_term_major_chunks():
    terms = cfg_terms(1.25, 2.5)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 5, 4)).astype(np.float32)  # 3 terms × 2 prompts
    expected = sum(t.weight * v[i * 2:(i + 1) * 2].astype(np.float64) for i, t in enumerate(terms))
    got = combine_vector_fields(v, terms)
    assert got.dtype == np.float32 and got.shape == (2, 5, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_single_term_is_returned_unweighted():
    terms = cfg_terms(0.0, 1.0)
    v = np.ones((1, 3, 2), np.float32) * 7
    assert combine_vector_fields(v, terms) is v
