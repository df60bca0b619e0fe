"""benchmarks/: the harness and its output format on the tiny model (no timing assertions), and the
analytic FLOP count against torch's own counter."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

STAT_KEYS = {"n", "median", "p10", "p90"}


@pytest.fixture(scope="module")
def smoke(tiny_hub, tmp_path_factory):
    """``python -m benchmarks.run --smoke`` on the fixtures' tiny hub cache, in a fresh process."""
    pytest.importorskip("matplotlib", reason="the benchmark needs the bench extra (matplotlib, psutil)")
    pytest.importorskip("psutil", reason="the benchmark needs the bench extra (matplotlib, psutil)")
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out"
    env = {**os.environ, "HF_HUB_CACHE": str(tiny_hub), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "benchmarks.run", "--smoke", "--batch", "1,2", "--cache", str(tmp / "cache"),
           "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r.stdout


def test_smoke_writes_json_markdown_and_png(smoke):
    out, stdout = smoke
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "jasco-trt-bench/1"
    assert {"command", "date", "machine", "config", "peaks", "flops", "variants", "skipped", "targets"} <= set(res)
    assert res["machine"]["cpu"]["model_name"]
    assert res["config"]["cfg_terms"] == 3 and res["config"]["batches"] == [1, 2]
    assert res["peaks"]["cpu_measured"]["practical_fp32_gflops"] > 0
    assert set(res["variants"]) >= {"torch:fp32", "ort-cpu:fp32", "ort-cpu:fp32-fused", "ort-cpu:int8"}
    for b, rows in ((1, 3), (2, 6)):
        f = res["flops"][f"flow_step/b{b}"]
        assert f["rows"] == rows and f["total"] > 0
    for name, v in res["variants"].items():
        comps = v["components"]
        assert {"drums_encoder", "text_encoder/b1", "flow_step/b1", "flow_step/b2", "decoder/b2", "end_to_end/b1"} <= set(comps)
        for key, c in comps.items():
            assert STAT_KEYS <= set(c), (name, key)
            assert c["p10"] <= c["median"] <= c["p90"]
            if name != "torch:fp32":
                assert c["speedup"]["torch:fp32"] > 0
                assert c["output_rel_l2"] >= 0
        flow = comps["flow_step/b1"]
        assert flow["flops"] == res["flops"]["flow_step/b1"]["total"] and flow["gflops_per_s"] > 0
        assert 0 < flow["utilisation"]["practical"]
        assert comps["end_to_end/b1"]["rtf"] > 0 and comps["end_to_end/b1"]["nfe"] == res["config"]["steps"]
        assert v["memory"]["rss_peak_mb"] > 0
        assert v["artifacts"]["flow_step"]["bytes"] > 0
    # fp32 ONNX computes what PyTorch computes; int8 is checked on the latents of the solve
    for name in ("ort-cpu:fp32", "ort-cpu:fp32-fused"):
        assert res["variants"][name]["components"]["flow_step/b1"]["output_rel_l2"] < 1e-4
    q = res["variants"]["ort-cpu:int8"]["quality"]
    assert q["reference"] == "ort-cpu:fp32" and q["latents_rel_l2"] >= 0
    assert res["variants"]["ort-cpu:fp32"]["quality"]["role"] == "reference"
    assert any(t["goal"].startswith("ort-cpu:fp32 flow step") for t in res["targets"])
    md = (out / "results.md").read_text()
    assert "| variant |" in md and "flow step B=1 (3 rows)" in md and "ort-cpu:int8" in md
    assert "| variant |" in stdout
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flop_count_matches_torch_flop_counter(tiny_cd):
    """Analytic count vs torch.utils.flop_counter on the tiny flow step (attention through the math
    SDPA backend so that its two batched products are counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.flops import flow_step_flops
    from jasco_export.graphs.spec import declare_graphs

    spec = declare_graphs(tiny_cd)["flow_step"]
    sizes = {"batch": 3, "text_len": 7}
    inputs = spec.sample(sizes, torch.Generator().manual_seed(0))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        spec.module(*[inputs[s.name] for s in spec.inputs])
    counted = counter.get_total_flops()
    ours = flow_step_flops(tiny_cd.cfg.transformer, rows=3, frames=tiny_cd.n_frames, text_len=7)
    assert ours["total"] == pytest.approx(counted, rel=0.03)
    assert ours["self_attn_scores_values"] > 0.3 * ours["total"]  # tiny: T²·d dominates, so attention is checked


def test_flop_count_at_400m_scale():
    """Closed form at the 400M size (dim 1024, 24 layers, FFN 4096, T 500, L 16, 3 rows): 1.138 TFLOP."""
    from benchmarks.flops import flow_step_flops
    from jasco_export.reference.config import TransformerConfig

    tc = TransformerConfig(dim=1024, num_heads=16, num_layers=24, chords_dim=16, drums_dim=2)
    f = flow_step_flops(tc, rows=3, frames=500, text_len=16)
    per_layer_row = 2 * (4 * 500 * 1024 ** 2 + 2 * 500 ** 2 * 1024 + 2 * 500 * 1024 ** 2 + 2 * 16 * 1024 ** 2
                         + 2 * 500 * 16 * 1024 + 2 * 500 * 1024 * 4096)
    assert f["total"] - f["embed_in_out"] - f["time_embedding"] == 3 * 24 * per_layer_row
    assert f["total"] == pytest.approx(1.138e12, rel=1e-3)


def test_variant_planning_adds_baseline_and_explains_skips():
    from benchmarks.run import parse_args, plan_variants

    run, skipped = plan_variants(parse_args(["--backends", "ort-cpu,trt", "--precision", "fp32,int8"]))
    assert run[0] == ("torch", "fp32") and ("ort-cpu", "int8") in run
    assert "trt:fp32" in skipped and "trt:int8" in skipped
    if not torch.cuda.is_available():
        assert ("torch-cuda", "fp16") not in run
