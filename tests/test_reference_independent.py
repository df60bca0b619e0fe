"""CFG terms and chord framing, tested on the runtime AND the PyTorch reference separately.

The reference has its own port of audiocraft's code (jasco_export.reference.guidance / .chords), so
runtime-vs-reference parity can catch a bug in either. Expected values are audiocraft's documented
behaviour (/work/shared/spec/BEHAVIOUR.md §1–3, §13), written out by hand; the randomized tests then
check that both implementations agree on many inputs the examples do not cover.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import jasco_runtime.chords as runtime_chords
import jasco_runtime.guidance as runtime_guidance
from jasco_export.reference import chords as reference_chords
from jasco_export.reference import guidance as reference_guidance

IMPLS = ["runtime", "reference"]
# a hand-made mapping (no file needed): 'N' is a chord, not the null chord (BEHAVIOUR §3)
MAPPING = {"N": 0, "Am": 3, "C": 5, "F": 9, "G": 12, "UNK": 13}
N, AM, C, F, G = (MAPPING[k] for k in ("N", "Am", "C", "F", "G"))
NULL_CHORD = 194  # card of the released chords conditioner (and of the tiny models)


def cfg_terms(impl: str, coef_all: float, coef_txt: float):
    return (runtime_guidance if impl == "runtime" else reference_guidance).cfg_terms(coef_all, coef_txt)


def frame_chords(impl: str, chords, mapping=MAPPING, frame_rate: float = 50.0, duration: float = 10.0) -> np.ndarray:
    if impl == "runtime":
        out = runtime_chords.frame_chords(list(chords), mapping, frame_rate, duration)
        assert isinstance(out, np.ndarray)
        return out
    out = reference_chords.frame_chords(list(chords), mapping, frame_rate, duration)
    assert isinstance(out, torch.Tensor)
    return out.numpy()


# -- §1 CFG terms -------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("coefs, expected", [
    ((5.0, 0.0), [("all", 5.0), ("null", -4.0)]),
    ((1.0, 0.0), [("all", 1.0), ("null", 0.0)]),    # Null (0) kept: it follows the removed Text
    ((0.0, 1.0), [("text", 1.0)]),
    ((0.0, 0.0), [("text", 0.0), ("null", 1.0)]),   # Text (0) kept: it follows the removed All
    ((2.0, -1.0), [("all", 2.0), ("text", -1.0)]),
    ((1.25, 2.5), [("all", 1.25), ("text", 2.5), ("null", -2.75)]),  # the demo app's setting
])
def test_cfg_terms_match_audiocraft_examples(impl, coefs, expected):
    got = [(t.kind, t.weight) for t in cfg_terms(impl, *coefs)]
    assert [k for k, _ in got] == [k for k, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], abs=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_what_each_cfg_term_drops(impl):
    """BEHAVIOUR §2: Text drops chords, drums, melody; Null drops everything; no chords → melody kept."""
    all_, text, null = cfg_terms(impl, 1.25, 2.5)
    drops = lambda t, chords_given: (t.drops_description, t.drops_chords, t.drops_drums,  # noqa: E731
                                     t.drops_melody(chords_given))
    assert drops(all_, True) == (False, False, False, False)
    assert drops(text, True) == (False, True, True, True)
    assert drops(null, True) == (True, True, True, True)
    assert drops(text, False)[3] is False and drops(null, False)[3] is False


# -- §13 chord framing --------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("start, frame", [(0.14, 7), (4.14, 207), (1.14, 57), (0.0, 0), (9.98, 499)])
def test_chord_change_lands_on_audiocraft_float_edge(impl, start, frame):
    """f/50 ≥ start in float: 0.14 s → 7 (ceil would give 8), 4.14 → 207, 1.14 → 57 (int gives 206 / 56)."""
    got = frame_chords(impl, [("C", start)])
    assert got.dtype == np.int64 and got.shape == (500,)
    expected = np.array([N] * frame + [C] * (500 - frame))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_unsorted_progression_keeps_list_order(impl):
    # G (5 s) blocks F (2 s): both are popped at frame 250, F last → F wins
    np.testing.assert_array_equal(frame_chords(impl, [("C", 0.0), ("G", 5.0), ("F", 2.0)]),
                                  [C] * 250 + [F] * 250)
    # F (2 s) blocks C (0 s): 'N' until frame 100, then F and C are popped together → C
    np.testing.assert_array_equal(frame_chords(impl, [("F", 2.0), ("C", 0.0)]), [N] * 100 + [C] * 400)


@pytest.mark.parametrize("impl", IMPLS)
def test_changes_at_or_after_the_segment_end_are_ignored(impl):
    np.testing.assert_array_equal(frame_chords(impl, [("Am", 0.0), ("G", 10.0), ("F", 12.0)]), [AM] * 500)


@pytest.mark.parametrize("impl", IMPLS)
def test_negative_starts(impl):
    np.testing.assert_array_equal(frame_chords(impl, [("Am", -1.0), ("C", -0.5), ("G", 3.0)]),
                                  [C] * 150 + [G] * 350)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_label_is_no_chord(impl):
    np.testing.assert_array_equal(frame_chords(impl, [("C", 0.0), ("", 1.0)]), [C] * 50 + [N] * 450)


# -- §3 absent chords: null chord (card) on every frame ------------------------------------------------
def test_reference_absent_chords_are_the_null_chord_int32(tiny_cd):
    terms = cfg_terms("reference", 1.25, 2.5)
    assert tiny_cd.frame_chords(None) is None and tiny_cd.frame_chords([]) is None
    absent = tiny_cd.condition_inputs(["a", "b"], terms, tiny_cd.frame_chords(None))["chords"]
    assert absent.dtype == torch.int32 and absent.shape == (6, 500)
    assert (absent == NULL_CHORD).all()
    given = tiny_cd.condition_inputs(["a", "b"], terms, tiny_cd.frame_chords([("C", 0.0)]))["chords"]
    assert given.dtype == torch.int64
    assert (given[:2] == tiny_cd.chords_mapping["C"]).all() and (given[2:] == NULL_CHORD).all()


@pytest.fixture(scope="module")
def pipe(tiny_engines):
    from jasco_runtime import JascoPipeline

    return JascoPipeline.from_dir(tiny_engines.out, backend="onnxruntime", providers=["cpu"])


def test_runtime_absent_chords_are_the_null_chord_embedding(pipe):
    """The runtime embeds chords by table lookup: absent must equal looking up 194 on all 500 frames."""
    terms = cfg_terms("runtime", 1.25, 2.5)
    table = pipe.tables["chords_emb"]
    from jasco_runtime.conditioning import WindowInputs

    tokens = tuple(pipe.tokenizer.encode_each(["a", "b"]))
    window = lambda frames: WindowInputs(("a", "b"), tokens, frames, None, None)  # noqa: E731
    absent = pipe.core.encode(window(None), terms).temporal["chords"]
    assert absent.shape == (6, 500, table.shape[1])
    np.testing.assert_array_equal(absent, np.broadcast_to(table[np.full(500, NULL_CHORD)], absent.shape))
    assert not np.array_equal(table[NULL_CHORD], table[pipe.chords_mapping["N"]])  # null ≠ 'N'
    given = pipe.core.encode(window(np.full(500, pipe.chords_mapping["C"])), terms).temporal["chords"]
    np.testing.assert_array_equal(given[:2], np.broadcast_to(table[pipe.chords_mapping["C"]], (2, 500, table.shape[1])))
    np.testing.assert_array_equal(given[2:], absent[2:])


# -- randomized cross-check: runtime == reference ------------------------------------------------------
def _random_coef(rng: random.Random) -> float:
    return rng.choice([0.0, 1.0, -1.0, 0.5, 1e-7, -1e-7, 1e-6, 2e-6, rng.uniform(-3, 6), float(rng.randint(-3, 6))])


def test_random_cfg_pairs_runtime_equals_reference():
    rng = random.Random(0)
    pairs = [(_random_coef(rng), _random_coef(rng)) for _ in range(2000)]
    pairs += [(a, 1.0 - a) for a in (0.0, 0.3, 1.0, 5.0, -2.0)]  # Null weight exactly 0
    kinds = set()
    for a, t in pairs:
        rt = [(x.kind, x.weight) for x in cfg_terms("runtime", a, t)]
        ref = [(x.kind, x.weight) for x in cfg_terms("reference", a, t)]
        assert rt == ref, (a, t)
        kinds.add(tuple(k for k, _ in rt))
    # every outcome the quirk allows occurred ([All] or [Null] alone cannot: the term after a removed one is kept)
    assert kinds == {("all", "text", "null"), ("all", "text"), ("all", "null"), ("text", "null"), ("text",)}


def _random_start(rng: random.Random, frame_rate: float) -> float:
    r = rng.random()
    if r < 0.4:  # exactly on a frame time, or the decimal nearest to one (the float edges)
        return round(rng.randint(-5, 520) / frame_rate, rng.choice([2, 3, 6, 12]))
    if r < 0.5:
        return rng.choice([0.0, -0.0, 0.14, 1.14, 4.14, 9.98, 10.0, -1.0])
    return rng.uniform(-2.0, 12.0)


def test_random_progressions_runtime_equals_reference():
    rng = random.Random(1)
    labels = ["N", "Am", "C", "F", "G", ""]
    for _ in range(400):
        frame_rate = rng.choice([50.0, 50.0, 25.0, 43.0, 31.25])
        duration = rng.choice([10.0, 10.0, 4.2, 7.33, 0.5])
        chords = [(rng.choice(labels), _random_start(rng, frame_rate)) for _ in range(rng.randint(1, 9))]
        rt = frame_chords("runtime", chords, frame_rate=frame_rate, duration=duration)
        ref = frame_chords("reference", chords, frame_rate=frame_rate, duration=duration)
        assert rt.shape == (int(duration * frame_rate),)
        np.testing.assert_array_equal(rt, ref, err_msg=f"{chords} @ {frame_rate} Hz, {duration} s")


def test_random_progressions_on_the_release_mapping():
    from conftest import shared_path

    mapping = runtime_chords.load_chord_mapping(shared_path("assets", "chord_to_index_mapping.pkl"))
    labels = sorted(mapping)
    rng = random.Random(2)
    for _ in range(200):
        chords = [(rng.choice(labels), _random_start(rng, 50.0)) for _ in range(rng.randint(1, 12))]
        np.testing.assert_array_equal(frame_chords("runtime", chords, mapping), frame_chords("reference", chords, mapping),
                                      err_msg=str(chords))
