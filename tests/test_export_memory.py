"""Export memory (issue 12): weights loaded once, streamed to disk, random models written without copies.

Peak-RSS figures are benchmarks (``python -m benchmarks.export_memory``); these tests check the
mechanisms that keep them low, each of which a regression would silently undo.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def _mapped_ranges(path: Path):
    """Address ranges of this process mapped from ``path`` (/proc/self/maps)."""
    target = str(path.resolve())
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == target:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    return out


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_loaded_weights_are_the_memory_mapped_checkpoint(tiny_cd):
    """get_pretrained keeps no copy of JASCO's weights: its parameters live in the mapped state_dict.bin."""
    ranges = _mapped_ranges(tiny_cd.files.state_dict)
    assert ranges, "state_dict.bin is not memory-mapped"
    params = [p for n, p in tiny_cd.model.named_parameters() if "compression_model" not in n]
    inside = [any(lo <= p.data_ptr() < hi for lo, hi in ranges) for p in params]
    assert params and all(inside), f"{inside.count(False)} of {len(params)} parameters were copied"


def test_assign_load_casts_half_checkpoints_and_reports_unset_tensors():
    from jasco_export.errors import CheckpointError
    from jasco_export.reference.loading import strict_load

    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    state = {k: v.half() for k, v in ref.state_dict().items()}
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    strict_load(model, state, assign=True)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, state[k].float())

    with torch.device("meta"):
        model = torch.nn.Linear(4, 3)
    model.register_buffer("scale", torch.ones(1, device="meta"), persistent=False)
    with pytest.raises(CheckpointError, match="1 tensors not in the checkpoint stay unset"):
        strict_load(model, {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}, assign=True)


def test_external_data_is_page_aligned_and_equals_the_module(tiny_cd, tmp_path, monkeypatch):
    """Streamed initializers: one .data file, page-aligned offsets, values equal to the exported module."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from jasco_export.graphs import onnx_export
    from jasco_export.graphs.spec import declare_graphs

    spec = declare_graphs(tiny_cd)["text_encoder"]
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1000)
    path = onnx_export.export_graph(spec, tmp_path / "text_encoder.fp32.onnx")
    skeleton = onnx.load(str(path), load_external_data=False)
    external = [t for t in skeleton.graph.initializer if uses_external_data(t)]
    assert external and all(ExternalDataInfo(t).offset % onnx_export.ALIGN == 0 for t in external)
    assert {ExternalDataInfo(t).location for t in external} == {path.name + ".data"}
    loaded = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    emb = tiny_cd.model.condition_provider.conditioners["description"].t5.shared.weight.detach().numpy()
    assert any(v.shape == emb.shape and np.array_equal(v, emb) for v in loaded.values())


def test_random_model_writer_matches_a_default_built_model(tmp_path):
    """make-tiny's meta-built JASCO has the same state (keys, order, values) as one built with default
    init, the EnCodec attached, then randomised skipping the EnCodec (the writer's former recipe)."""
    from transformers import EncodecModel

    from jasco_export.reference.builders import build_flow_model
    from jasco_export.reference.config import parse_xp_cfg
    from jasco_export.tiny.assets import make_tiny_encodec
    from jasco_export.tiny.presets import randomize_, tiny_xp_cfg, write_tiny_jasco

    encodec = EncodecModel.from_pretrained(make_tiny_encodec(tmp_path / "enc", kmeans_iters=1)).eval()
    folder = write_tiny_jasco(tmp_path / "m", True, 32, encodec, seed=3)
    written = torch.load(folder / "state_dict.bin", weights_only=True)["best_state"]

    ref = build_flow_model(parse_xp_cfg(tiny_xp_cfg(True)), t5_dim=32, compression_model=encodec)
    randomize_(ref, torch.Generator().manual_seed(3), skip_prefix="condition_provider.conditioners.self_wav.compression_model.")
    expected = ref.state_dict()
    assert list(written) == list(expected)
    assert all(torch.equal(written[k], v) for k, v in expected.items())
