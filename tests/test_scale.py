"""Real-size checks (``-m slow``): the 400M architecture with random weights, exported on this machine.

Slow (minutes, ~13 GB peak to write the model): CI runs them selectively with ``pytest -m slow``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub_400m():
    """The 400M repos, written into the session's offline hub cache beside the tiny ones."""
    from conftest import _TINY_ROOT
    from jasco_export.tiny.presets import make_tiny_models

    return make_tiny_models(_TINY_ROOT, preset="400m", variants=["chords-drums"])


def test_400m_flow_step_exports_and_matches_pytorch(hub_400m, tmp_path):
    from jasco_export.exporter import ExportOptions, run_export

    res = run_export(ExportOptions(model="jasco-random-400m/chords-drums", out=tmp_path / "e400",
                                   precisions=("fp32",), graphs=["flow_step"], end_to_end=False))
    rows = [r for r in res.parity["rows"] if r["check"].startswith("flow_step")]
    assert res.parity["passed"] and rows and all(r["max_abs"] <= 1e-4 for r in rows)
    m = json.loads((res.out / "manifest.json").read_text())
    assert m["dims"] == {"transformer": 1024, "heads": 16, "layers": 24, "flow": 128}
    assert m["tensorrt"]["compatibility"]["flow_step"]["ok"]
    assert np.isfinite(rows[0]["rel_l2"])
