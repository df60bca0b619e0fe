"""Multi-source CFG terms and their combination (jasco_runtime.guidance)."""
from __future__ import annotations

import numpy as np

from jasco_runtime.guidance import cfg_terms, combine_vector_fields


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
