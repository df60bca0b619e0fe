"""HTTP bodies that used to be answered 500 are input errors (issue 20 §4; sweep H24, H25, H38, H42, H47), checked
on the ingress's validator directly (the HTTP mapping InputError → 400 JSON is covered by the service tests)."""
from __future__ import annotations

import json

import pytest

from jasco_runtime.errors import InputError


@pytest.fixture(scope="module")
def checker(tiny_engines):
    from jasco_runtime.export_folder import ExportFolder
    from jasco_serve.inputs import InputChecker

    return InputChecker(ExportFolder.open(tiny_engines.out))


@pytest.mark.parametrize("body, fragment", [
    ({"text": "a", "solver": ["euler"]}, "unknown solver ['euler']"),  # H24: unhashable list → TypeError
    ({"text": "a", "format": ["float"]}, "unknown format ['float']"),  # H25
    ({"text": "a", "normalize": {"x": 1}}, "unknown normalize {'x': 1}"),
    ({"text": "\ud800", "steps": 1}, "lone UTF-16 surrogate"),  # H42: reached the tokenizer
    ({"text": "a", "duration": 0.1, "normalize": "loudness", "steps": 1}, "at least 0.4 s"),  # H47 (0.01 s in the sweep)
    ({"text": "a", "duration": 1e-6, "steps": 1}, "at least one latent frame"),  # H43/H46: a 0-sample wav
    ({"text": "a", "overlap": 2, "steps": 1}, "give a duration too"),  # H49
])
def test_bad_fields_are_one_line_input_errors(checker, body, fragment):
    with pytest.raises(InputError) as err:
        checker.from_json(json.dumps(body).encode())
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_deeply_nested_json_is_an_input_error(checker):
    """H38: 100 000 nested "[" in chords → RecursionError → 500."""
    body = b'{"text": "a", "chords": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InputError, match="nested too deeply"):
        checker.from_json(body)


def test_the_prepared_request_is_frozen_and_holds_the_validated_inputs(checker):
    """The ingress prepares once; what is queued is what was validated (it was mutated after validation)."""
    import dataclasses

    parsed = checker.from_json(json.dumps({"text": "funk", "chords": "C:0 F:4", "steps": 2}).encode())
    prepared = parsed.request
    assert prepared.windows[0].chords is not None and prepared.windows[0].chords.shape == (500,)
    assert prepared.request.seed == parsed.seed and prepared.text_tokens > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.request.drums = "other"  # type: ignore[misc]
