"""jasco-export on the tiny model: graphs, manifest, parity gate, TensorRT skip, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def test_export_writes_every_artifact_and_passes_parity(tiny_engines):
    out = tiny_engines.out
    names = {p.name for p in out.iterdir()}
    for graph in ("text_encoder", "drums_encoder", "flow_step", "encodec_decoder"):
        assert f"{graph}.fp32.onnx" in names
    assert "encodec_encoder.fp32.onnx" not in names  # role "extra": exported only on request
    assert "flow_step.fp16.onnx" in names and "drums_encoder.fp16.onnx" not in names  # drums kept fp32
    for f in ("manifest.json", "tables.npz", "tokenizer.json", "chords_mapping.json", "parity.json"):
        assert f in names
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"]
    checks = {(r["check"], r["precision"]): r for r in parity["rows"]}
    assert checks[("flow_step/random", "fp32")]["max_abs"] <= 1e-4
    assert checks[("e2e/euler10-latents", "fp32")]["max_abs"] <= 1e-4
    assert checks[("e2e/euler10-audio", "fp32")]["max_abs"] <= 1e-4
    assert checks[("e2e/euler10-latents", "fp16")]["rel_l2"] <= 3e-2
    assert checks[("drums_encoder/realistic", "fp32")]["code_agreement"] >= 0.99


def test_manifest_contract(tiny_engines):
    m = json.loads((tiny_engines.out / "manifest.json").read_text())
    assert m["schema_version"].startswith("2.")
    assert m["model"]["id"] == "jasco-tiny/chords-drums" and m["model"]["variant"] == "chords-drums"
    assert set(m["model"]["sha256"]) == {"state_dict.bin", "compression_state_dict.bin"}
    assert m["audio"] == {"sample_rate": 32000, "channels": 1, "frame_rate": 50.0, "duration": 10.0,
                          "n_frames": 500, "segment_samples": 320000, "max_duration": 60.0}
    assert m["export"]["runtime_graphs"] == ["text_encoder", "drums_encoder", "flow_step", "solver_step", "encodec_decoder"]
    assert m["latents"]["std"] == pytest.approx(4.0102) and m["latents"]["decoder_folds_unnormalisation"]
    flow = m["graphs"]["flow_step"]
    assert [i["name"] for i in flow["inputs"]] == ["z", "t", "text", "chords", "drums"]
    assert flow["inputs"][0]["shape"] == ["batch", 500, 128]
    assert flow["profile"]["batch"]["max"] == 6 and flow["profile"]["text_len"]["max"] == 128
    assert flow["role"] == "runtime" and flow["precisions"] == ["fp32", "fp16", "int8"]
    assert m["graphs"]["drums_encoder"]["precisions"] == ["fp32"]
    assert flow["artifacts"]["onnx-fp32"]["file"] == "flow_step.fp32.onnx"
    assert flow["artifacts"]["onnx-fp16"]["file"] == "flow_step.fp16.onnx"
    size = (tiny_engines.out / "flow_step.fp16.onnx").stat().st_size
    assert flow["artifacts"]["onnx-fp16"]["digests"]["flow_step.fp16.onnx"]["size"] == size
    assert m["conditioners"]["chords"]["null_index"] == 194
    assert m["tensorrt"]["skipped"] == "not requested (--backend onnxruntime)"  # the default; TensorRT-absent: see below
    for name, report in m["tensorrt"]["compatibility"].items():
        assert report["ok"], (name, report["problems"])
    assert "torch" in m["tools"] and "onnx" in m["tools"]


def test_onnx_graphs_pass_checker_and_have_dynamic_batch(tiny_engines):
    import onnx

    for path in tiny_engines.out.glob("*.onnx"):
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch", path.name
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"Dropout", "weight_norm"}, path.name


def test_tables_match_the_reference(tiny_engines, tiny_cd):
    """Tables against the release checkpoint's own tensors (read by key, not through the modules the exporter
    reads), and the silence drums against the reference's conditioning of a batch that keeps drums on one row
    and drops them on the other (BEHAVIOUR §4: the dropped row is EnCodec of a zero wav)."""
    import torch

    from jasco_export.reference.loading import read_release

    t = np.load(tiny_engines.out / "tables.npz")
    state, _ = read_release(tiny_cd.files.state_dict)
    prefix = "condition_provider.conditioners."
    np.testing.assert_array_equal(t["chords_emb"], state[prefix + "chords.emb.weight"].float().numpy())
    np.testing.assert_array_equal(t["drums_null"], state[prefix + "self_wav.output_proj.bias"].float().numpy())
    drums = tiny_cd.model.condition_provider.conditioners["self_wav"]
    batch = torch.stack([0.1 * torch.randn(1, 320000, generator=torch.Generator().manual_seed(0)),
                         torch.zeros(1, 320000)])
    with torch.no_grad():
        silence = drums(batch)[0][1].numpy()
    np.testing.assert_allclose(t["drums_silence"], silence, atol=1e-6)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jasco_export.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_existing_output_needs_force(tiny_engines):
    r = _cli("--model", "jasco-tiny/chords-drums", "--out", str(tiny_engines.out))
    assert r.returncode == 2 and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_model_leaves_no_folder(tiny_hub, tmp_path):
    out = tmp_path / "x"
    r = _cli("--model", "jasco-tiny/nope", "--out", str(out))
    assert r.returncode == 2 and "jasco-tiny/nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint_leaves_no_folder(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "state_dict.bin").write_bytes(b"\x00" * 100)
    (model / "compression_state_dict.bin").write_bytes(b"\x00" * 100)
    r = _cli("--model", str(model), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "corrupt" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_output(tmp_path):
    """A parent folder nobody can write to (not even root: /proc) → exit 2 naming the folder."""
    r = _cli("--model", "jasco-tiny/chords-drums", "--out", "/proc/self/jasco-export-test")
    assert r.returncode == 2 and "cannot write to /proc/self" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unwritable_output_path_under_a_file(tiny_hub, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _cli("--model", "jasco-tiny/chords-drums", "--out", str(blocker / "sub" / "out"))
    assert r.returncode == 2 and "cannot write" in r.stderr


def test_trt_backend_explicit_request_fails_clearly_without_tensorrt(tiny_hub, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    out = tmp_path / "trt"
    r = _cli("--model", "jasco-tiny/chords-drums", "--out", str(out), "--backend", "trt", "--precision", "fp32,fp16",
             "--graphs", "flow_step", "--no-e2e")
    assert r.returncode != 0 and "TensorRT" in r.stderr and not out.exists()


def test_large_graphs_use_one_external_data_file(tiny_cd, tmp_path, monkeypatch):
    """The > 2 GB path (1B flow step), forced on the tiny model by lowering the threshold."""
    import onnx
    import onnxruntime as ort
    import torch

    from jasco_export.graphs import onnx_export
    from jasco_export.graphs.spec import declare_graphs

    spec = declare_graphs(tiny_cd)["flow_step"]
    small = onnx_export.export_graph(spec, tmp_path / "small" / "flow_step.fp32.onnx")
    monkeypatch.setattr(onnx_export, "TWO_GB", 1000)
    big = onnx_export.export_graph(spec, tmp_path / "big" / "flow_step.fp32.onnx")
    assert sorted(p.name for p in big.parent.iterdir()) == ["flow_step.fp32.onnx", "flow_step.fp32.onnx.data"]
    assert big.stat().st_size < small.stat().st_size / 10  # the weights live in the .data file
    onnx_export.convert_fp16(big, big.parent / "flow_step.fp16.onnx")
    assert (big.parent / "flow_step.fp16.onnx.data").is_file()
    onnx.checker.check_model(str(big.parent / "flow_step.fp16.onnx"))
    feeds = {k: v.numpy() for k, v in spec.sample({"batch": 2, "text_len": 5}, torch.Generator().manual_seed(1)).items()}
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    np.testing.assert_array_equal(run(big), run(small))


def test_summary_table_lists_every_graph_with_sizes(tiny_engines):
    from jasco_export.exporter import summary_table

    table = summary_table(tiny_engines).splitlines()
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert set(rows) == set(tiny_engines.manifest["graphs"])
    assert "MiB" in rows["flow_step"].split("|")[4]  # fp16 file present
    assert rows["drums_encoder"].split("|")[4].strip() == "-"  # kept fp32
    assert all(line.rstrip("| ").endswith("ok") for line in rows.values())


def test_int8_cpu_flow_step_is_exported_gated_and_used_by_the_runtime(tiny_hub, tmp_path):
    from jasco_export.exporter import ExportOptions, run_export
    from jasco_runtime import JascoPipeline

    res = run_export(ExportOptions(model="jasco-tiny/chords-drums", out=tmp_path / "e", precisions=("fp32", "int8")))
    m = res.manifest
    int8 = m["graphs"]["flow_step"]["artifacts"]["onnx-int8"]
    assert int8["file"] == "flow_step.int8.onnx"
    assert int8["attention_fusion"]["self_attention_fused"] == 2  # 2 layers
    assert not list(res.out.glob(".*"))  # the fused intermediate is not left behind
    rows = {(r["check"], r["precision"]): r for r in res.parity["rows"]}
    assert rows[("e2e/euler10-latents", "int8")]["status"] == "PASS"
    assert 0 < rows[("flow_step/random", "int8")]["rel_l2"] <= 5e-2  # really quantised, and close
    kw = dict(chords="C:0 G:5", cfg_coef_all=1.25, cfg_coef_txt=2.5, steps=4, progress=False,
              init_noise=np.random.default_rng(0).standard_normal((1, 500, 128)).astype(np.float32))
    i8 = JascoPipeline.from_dir(res.out, backend="onnxruntime", providers=["cpu"], precision="int8")
    fp = JascoPipeline.from_dir(res.out, backend="onnxruntime", providers=["cpu"], precision="fp32")
    a, b = i8.generate(["funk"], **kw).latents, fp.generate(["funk"], **kw).latents
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert 0 < rel <= 2e-2


def test_runtime_shapes_span_the_profiles(tiny_cd):
    from jasco_export.graphs.spec import declare_graphs

    flow = declare_graphs(tiny_cd, max_batch=6, max_text_tokens=128)["flow_step"]
    lo, hi = flow.runtime_shapes()
    assert lo["z"] == (1, 500, 128) and lo["text"] == (1, 1, 64)
    assert hi["z"] == (6, 500, 128) and hi["text"] == (6, 128, 64) and hi["t"] == (6,)
