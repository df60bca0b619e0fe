"""benchmarks/: the harness on the tiny model (no timing assertions: what the report derives from the
measured times, the FLOP count against torch's own counter, the results format, the int8 error gate),
and the backend rules with fake engines that record their calls (equal timing rules for every GPU
backend, chunking to the engine profile, the NVML device)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import types
import typing as tp
from pathlib import Path

import numpy as np
import pytest

from jasco_runtime.backends.base import Engine, HostWorkspace, Traffic, host_binding, run_on_host
import torch

from conftest import ROOT

STAT_KEYS = {"n", "median", "p10", "p90", "mean", "min", "max"}
NUM = (int, float)


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
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r.stdout, json.loads((out / "results.json").read_text()), tmp / "cache"


# -- the smoke run ----------------------------------------------------------------------------------------
def _check(obj: tp.Any, schema: tp.Any, where: str = "results") -> None:
    """``schema``: a type (or tuple of types), a dict of required keys → schema, or [schema] for a list."""
    if isinstance(schema, dict):
        assert isinstance(obj, dict), f"{where} is {type(obj).__name__}, not an object"
        for key, sub in schema.items():
            assert key in obj, f"{where} lacks {key!r}"
            _check(obj[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(obj, list), where
        for i, x in enumerate(obj):
            _check(x, schema[0], f"{where}[{i}]")
    elif schema is bool:
        assert isinstance(obj, bool), f"{where} = {obj!r} is not a boolean"
    else:
        assert isinstance(obj, schema) and not isinstance(obj, bool), f"{where} = {obj!r} is not {schema}"


STATS = {k: NUM for k in STAT_KEYS}
RESULTS_SCHEMA = {  # the format README § Benchmarks documents
    "schema": str, "command": str, "date": str, "timing_rules": str, "flops_convention": str,
    "machine": {"cpu": {"model_name": str, "physical_cores": int}, "threads": int, "versions": dict,
                "loadavg_start": [NUM], "loadavg_end": [NUM]},
    "config": {"model": str, "batches": [int], "cfg_terms": int, "solver": str, "steps": int, "repeats": int,
               "components": [str], "dims": {"dim": int, "layers": int, "frames": int, "audio_seconds": NUM}},
    "peaks": {"cpu_measured": {"practical_fp32_gflops": NUM, "practical_fp32_source": str}, "cpu_nominal": dict},
    "flops": dict, "variants": dict, "skipped": dict, "targets": [{"goal": str, "value": str, "met": bool}],
    "setup_seconds": dict,
}
VARIANT_SCHEMA = {"label": str, "backend": str, "precision": str, "device": str, "notes": [str], "components": dict,
                  "artifacts": dict, "memory": {"rss_peak_mb": NUM, "shared_process_rss_peak_mb": NUM,
                                                "isolated": {"peak_rss_mb": NUM, "rss_after_setup_mb": NUM,
                                                             "rss_after_imports_mb": NUM, "torch_imported": bool}}}


def test_smoke_results_follow_the_documented_format(smoke):
    out, stdout, res, _ = smoke
    _check(res, RESULTS_SCHEMA)
    assert res["schema"] == "jasco-trt-bench/2"
    assert res["config"]["cfg_terms"] == 3 and res["config"]["batches"] == [1, 2]
    assert set(res["variants"]) == {"torch:fp32", "ort-cpu:fp32", "ort-cpu:fp32-fused", "ort-cpu:int8"}
    keys = {"drums_encoder", "text_encoder/b1", "text_encoder/b2", "flow_step/b1", "flow_step/b2", "decoder/b1",
            "decoder/b2", "end_to_end/b1", "end_to_end/b2"}
    for name, v in res["variants"].items():
        _check(v, VARIANT_SCHEMA, name)
        assert set(v["components"]) == keys, name
        for key, c in v["components"].items():
            _check(c, STATS, f"{name} {key}")
            assert c["n"] == res["config"]["repeats"] and c["p10"] <= c["median"] <= c["p90"], (name, key)
        assert v["components"]["end_to_end/b1"]["nfe"] == res["config"]["steps"]  # Euler: one evaluation per step
    md = (out / "results.md").read_text()
    assert "| variant |" in md and "flow step B=1 (3 rows)" in md and "flow step B=2 (6 rows)" in md
    assert f"Timing rules: {res['timing_rules']}" in md and md in stdout
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp file


def _cells(md: str, name: str) -> tp.List[str]:
    """The summary-table row of variant ``name`` (the second table: its header starts 'variant | flow-step')."""
    summary = md[md.index("Summary:"):]
    row = next(ln for ln in summary.splitlines() if ln.startswith(f"| {name} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_smoke_speedups_are_ratios_of_the_measured_medians_and_printed(smoke):
    out, _, res, _ = smoke
    v = res["variants"]
    md = (out / "results.md").read_text()
    for name in ("ort-cpu:fp32", "ort-cpu:fp32-fused", "ort-cpu:int8"):
        for key, c in v[name]["components"].items():
            ratio = v["torch:fp32"]["components"][key]["median"] / c["median"]
            assert c["speedup"] == {"torch:fp32": pytest.approx(ratio, rel=1e-12)}, (name, key)
        cells = _cells(md, name)
        flow = v["torch:fp32"]["components"]["flow_step/b1"]["median"] / v[name]["components"]["flow_step/b1"]["median"]
        e2e = v["torch:fp32"]["components"]["end_to_end/b1"]["median"] / v[name]["components"]["end_to_end/b1"]["median"]
        assert cells[1] == f"{flow:.2f}× vs torch:fp32" and cells[5] == f"{e2e:.2f}× vs torch:fp32", cells
        rtf = v[name]["components"]["end_to_end/b1"]["median"] / res["config"]["dims"]["audio_seconds"]
        assert cells[6] == f"{rtf:.3f}"
    assert v["torch:fp32"]["components"]["flow_step/b1"]["speedup"] == {}  # the baseline is not compared to itself
    fp32 = next(t for t in res["targets"] if t["goal"].startswith("ort-cpu:fp32 flow step"))
    ratio = v["torch:fp32"]["components"]["flow_step/b1"]["median"] / v["ort-cpu:fp32"]["components"]["flow_step/b1"]["median"]
    assert fp32["value"] == f"{ratio:.2f}×" and fp32["met"] == (ratio >= 2.2)


def test_smoke_flop_count_equals_torch_flop_counter(smoke, tiny_cd):
    """The FLOPs the report states for each batch against ``torch.utils.flop_counter`` on the tiny flow step at
    the same rows and text length, and the achieved rate against the measured median."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from jasco_export.graphs.spec import declare_graphs

    _, _, res, _ = smoke
    spec = declare_graphs(tiny_cd)["flow_step"]
    for b in (1, 2):
        f = res["flops"][f"flow_step/b{b}"]
        assert f["rows"] == 3 * b and f["frames"] == tiny_cd.n_frames
        inputs = spec.sample({"batch": f["rows"], "text_len": f["text_len"]}, torch.Generator().manual_seed(0))
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            spec.module(*[inputs[s.name] for s in spec.inputs])
        assert f["total"] == pytest.approx(counter.get_total_flops(), rel=0.03)
        for name, v in res["variants"].items():
            c = v["components"][f"flow_step/b{b}"]
            assert c["flops"] == f["total"]
            assert c["gflops_per_s"] == pytest.approx(f["total"] / c["median"] / 1e9, rel=1e-12)
            assert c["utilisation"]["practical"] == pytest.approx(
                c["gflops_per_s"] / res["peaks"]["cpu_measured"]["practical_fp32_gflops"], rel=1e-12)


def test_smoke_errors_fp32_exact_int8_within_its_gate(smoke):
    """fp32 ONNX computes what PyTorch computes; int8 differs (so it really ran int8) within the parity gate's
    documented limits: one evaluation ≤ INT8_REL_L2, the solve's latents ≤ INT8_E2E_REL_L2."""
    from jasco_runtime.verify import INT8_E2E_REL_L2, INT8_REL_L2

    _, _, res, _ = smoke
    v = res["variants"]
    for name in ("ort-cpu:fp32", "ort-cpu:fp32-fused"):
        for key in ("text_encoder/b1", "drums_encoder", "flow_step/b1", "flow_step/b2", "decoder/b2"):
            assert v[name]["components"][key]["output_rel_l2"] < 1e-4, (name, key)
            assert v[name]["components"][key]["output_reference"] == "torch:fp32"
    one_eval = v["ort-cpu:int8"]["components"]["flow_step/b1"]["output_rel_l2"]
    assert 1e-4 < one_eval <= INT8_REL_L2
    q = v["ort-cpu:int8"]["quality"]
    assert q["reference"] == "ort-cpu:fp32" and q["nfe"] == res["config"]["steps"]
    assert 1e-4 < q["latents_rel_l2"] <= INT8_E2E_REL_L2 and q["latents_max_abs"] > 0
    assert v["ort-cpu:fp32"]["quality"]["role"] == "reference"
    int8 = next(t for t in res["targets"] if t["goal"].startswith("ort-cpu:int8"))
    assert f"rel-L2 {q['latents_rel_l2']:.2e}" in int8["value"]


def test_smoke_memory_and_artifacts(smoke):
    """Runtime variants' own processes never import torch (as deployed); artifact sizes are the files'."""
    _, _, res, cache = smoke
    for name, v in res["variants"].items():
        iso = v["memory"]["isolated"]
        assert iso["torch_imported"] is (v["backend"] == "torch"), name
        assert iso["rss_after_imports_mb"] <= iso["rss_after_setup_mb"] <= iso["peak_rss_mb"] == v["memory"]["rss_peak_mb"]
        if v["backend"] != "torch":
            [folder] = {p.parent for p in cache.glob(f"exports/*/*/{v['artifacts']['flow_step']['file']}")}
            for art in v["artifacts"].values():
                assert art["bytes"] == (folder / art["file"]).stat().st_size, (name, art)
    files = {n: v["artifacts"]["flow_step"]["file"] for n, v in res["variants"].items() if v["backend"] != "torch"}
    assert len(set(files.values())) == 3, files  # fp32, fused fp32 and int8 are three graphs


# -- FLOP count ---------------------------------------------------------------------------------------------
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


# -- plan ---------------------------------------------------------------------------------------------------
def test_plan_adds_the_baseline_and_explains_skips():
    from benchmarks.plan import make_plan
    from benchmarks.run import parse_args

    plan = make_plan(parse_args(["--backends", "ort-cpu,trt", "--precision", "fp32,int8"]))
    assert plan.variants[0] == ("torch", "fp32") and ("ort-cpu", "int8") in plan.variants
    assert "no fp32 path" in plan.skipped["trt:fp32"] and "no int8 path" in plan.skipped["trt:int8"]
    if not torch.cuda.is_available():
        assert ("torch-cuda", "fp16") not in plan.variants


@pytest.mark.parametrize("argv, words", [
    (["--components", "flow,decoder"], "unknown component"),
    (["--backends", "ort-gpu"], "unknown backend"),
    (["--batch", "0"], "--batch"),
    (["--batch", "one"], "--batch"),
    (["--steps", "0"], "--steps"),
    (["--repeats", "0"], "--repeats"),
])
def test_plan_refuses_bad_arguments_before_any_work(argv, words):
    from benchmarks.plan import make_plan
    from benchmarks.run import main, parse_args
    from jasco_runtime.errors import InputError

    with pytest.raises(InputError, match=words):
        make_plan(parse_args(argv))
    assert main(argv) == 2


# -- workload -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny_cd", "tiny_cdm"])
def test_workload_feeds_the_declared_flow_step_inputs(model, request):
    """The flow-step inputs carry the names the graph declaration gives (melody included), one row per
    prompt × CFG term."""
    from benchmarks.workload import build_workload
    from jasco_export.graphs.spec import declare_graphs

    jasco = request.getfixturevalue(model)
    wl = build_workload(jasco, [2], "demo", "euler", 2)
    spec = declare_graphs(jasco)["flow_step"]
    assert list(wl.batches[2].flow) == spec.input_names
    for s in spec.inputs:
        assert wl.batches[2].flow[s.name].shape == spec.shape(s, {"batch": 6, "text_len": wl.batches[2].text_len})


# -- runtime variants with fake engines ----------------------------------------------------------------------
class FakeDevice:
    """A device-resident array: the fake engine refuses host arrays in ``run_bound`` when it is on a GPU."""

    def __init__(self, array: np.ndarray, log: tp.List[tp.Tuple]):
        self.array, self.log = array, log

    def numpy(self) -> np.ndarray:
        self.log.append(("to_host", self.array.shape))
        return self.array.copy()


class FakeEngine(Engine):
    """Records every call with its shapes and computes out = 2·(first input) + 1 per row (the whole engine
    interface: ``run`` on host arrays or on handles from ``bind``, which places them on the fake device)."""

    def __init__(self, key: tp.Any, inputs: tp.List[str], output: str, on_gpu: bool, max_rows: int):
        self.name, self.input_names, self.output_names = key.graph, inputs, [output]
        self.on_gpu, self.max_rows, self.log = on_gpu, max_rows, []  # type: tp.List[tp.Tuple]
        self.max_batch, self.device, self.traffic = max_rows, "cuda" if on_gpu else "cpu", Traffic()
        self.whole_inputs = frozenset()

    def _compute(self, feeds: tp.Mapping[str, np.ndarray]) -> np.ndarray:
        rows = {a.shape[0] for a in feeds.values()}
        assert len(rows) == 1 and rows.pop() <= self.max_rows, f"{self.name}: rows beyond the profile"
        return 2 * feeds[self.input_names[0]] + 1

    def run(self, feeds: tp.Mapping[str, tp.Any]) -> tp.Dict[str, np.ndarray]:
        if not any(isinstance(v, FakeDevice) for v in feeds.values()):
            self.log.append(("call", {k: v.shape for k, v in feeds.items()}))
            return {self.output_names[0]: self._compute(feeds)}
        assert self.on_gpu and all(isinstance(v, FakeDevice) for v in feeds.values()), "host input with device ones"
        self.log.append(("run_bound", {k: v.array.shape for k, v in feeds.items()}))
        out = FakeDevice(self._compute({k: v.array for k, v in feeds.items()}), self.log)
        return {self.output_names[0]: out.numpy()}

    def to_device(self, array: np.ndarray) -> FakeDevice:
        assert self.on_gpu
        self.log.append(("to_device", array.shape))
        return FakeDevice(np.array(array), self.log)

    def bind(self, arrays):
        if not self.on_gpu:
            return host_binding(arrays)
        return contextlib.nullcontext({k: self.to_device(v) for k, v in arrays.items()})

    def workspace(self):
        return HostWorkspace()

    def run_device(self, inputs, outputs, workspace) -> None:
        run_on_host(self, inputs, outputs)

    def close(self) -> None:
        pass


GRAPHS = {"flow_step": (["z", "t", "text"], "v", 6), "encodec_decoder": (["latents"], "audio", 3)}


def _fake_folder(path: Path) -> Path:
    """An export folder (real ExportFolder, fake files) with the flow step's and decoder's profiles."""
    from jasco_runtime.export_folder import ArtifactKey, ExportFolder

    path.mkdir()
    graphs = {}
    for name, (inputs, output, max_rows) in GRAPHS.items():
        graphs[name] = {"role": "runtime", "precisions": ["fp32", "fp16"], "artifacts": {},
                        "outputs": [{"name": output, "dtype": "float32", "shape": ["batch"]}],
                        "inputs": [{"name": n, "dtype": "float32", "shape": ["batch"]} for n in inputs],
                        "profile": {"batch": {"min": 1, "opt": 1, "max": max_rows}}}
    folder = ExportFolder.create(path, {
        "model": {"id": "fake", "variant": "chords-drums"},
        "audio": {"sample_rate": 32000, "channels": 1, "frame_rate": 50.0, "duration": 10.0, "n_frames": 4,
                  "segment_samples": 8},
        "latents": {"dim": 2}, "conditioners": {"text": {}},
        "generation_defaults": {"cfg_coef_all": 1.25, "cfg_coef_txt": 2.5, "solver": "euler", "steps": 10,
                                "rtol": 1e-4, "atol": 1e-4},
        "graphs": graphs, "files": {}})
    for name in GRAPHS:
        for key in (ArtifactKey(name, "fp32", "onnx"), ArtifactKey(name, "fp16", "tensorrt"),
                    ArtifactKey(name, "fp16", "onnx")):
            (path / key.default_file).write_bytes(b"x")
            folder.add_artifact(key)
    return path


class FakeWorkload:
    """Flow step at batch 3 with the demo CFG (9 rows > the profile's 6); decoder at batch 4 (> 3)."""

    solver, steps = "euler", 2

    def __init__(self):
        rng = np.random.default_rng(0)
        self.inputs = {
            "flow_step/b3": {"z": rng.standard_normal((9, 4, 2)).astype(np.float32),
                             "t": np.full((9,), 0.5, np.float32), "text": rng.standard_normal((9, 5, 8)).astype(np.float32)},
            "decoder/b4": {"latents": rng.standard_normal((4, 4, 2)).astype(np.float32)},
        }

    def component_inputs(self, components: tp.Sequence[str]):
        return iter(self.inputs.items())


@pytest.fixture
def fake_runtime(tmp_path, monkeypatch):
    """``runtime_variant`` on a fake export folder, engines from ``open_engine`` replaced by FakeEngine."""
    import importlib

    import jasco_runtime.backends as backends

    importlib.import_module("jasco_runtime.pipeline")  # first, so the pipeline's own `open_engine` stays the real one

    opened: tp.Dict[tp.Tuple[str, str], FakeEngine] = {}

    def fake_open(folder, key, providers=None, threads=None):
        inputs, output, _ = GRAPHS[key.graph]
        on_gpu = key.backend == "tensorrt" or "cuda" in (providers or [])
        engine = FakeEngine(key, inputs, output, on_gpu, folder.graphs[key.graph].max_size("batch"))
        opened[(key.backend + ("-cuda" if "cuda" in (providers or []) else ""), key.graph)] = engine
        return engine

    monkeypatch.setattr(backends, "open_engine", fake_open)
    return _fake_folder(tmp_path / "export"), opened


def _timed_trace(v: tp.Any, engine: FakeEngine, key: str) -> tp.Tuple[tp.List[tp.Tuple], np.ndarray]:
    engine.log.clear()
    out = v.call[key]()
    return list(engine.log), out


def test_gpu_backends_are_timed_under_the_same_rules(fake_runtime):
    """trt and ort-cuda: inputs placed on the device when the call is bound (outside the clock), the timed
    call runs only device-resident chunks and copies every output back to the host; same trace for both."""
    from benchmarks.variants import runtime_variant

    folder, opened = fake_runtime
    wl = FakeWorkload()
    traces = {}
    for backend, precision, tag in (("trt", "fp16", "tensorrt"), ("ort-cuda", "fp16", "onnx-cuda")):
        v = runtime_variant(backend, precision, folder, wl, ["flow_step", "decoder"], threads=None)
        engine = opened[(tag, "flow_step")]
        placed = [e for e in engine.log if e[0] == "to_device"]
        assert sorted(s[0] for _, s in placed) == [3, 3, 3, 6, 6, 6]  # z, t, text in chunks of 6 and 3 rows
        trace, out = _timed_trace(v, engine, "flow_step/b3")
        assert [e[0] for e in trace] == ["run_bound", "to_host", "run_bound", "to_host"], trace
        np.testing.assert_array_equal(out["v"], 2 * wl.inputs["flow_step/b3"]["z"] + 1)
        traces[backend] = trace
    assert traces["trt"] == traces["ort-cuda"]


@pytest.mark.parametrize("backend, precision, tag", [("ort-cpu", "fp32", "onnx"), ("trt", "fp16", "tensorrt"),
                                                     ("ort-cuda", "fp32", "onnx-cuda")])
def test_component_calls_stay_within_the_engine_profile(fake_runtime, backend, precision, tag):
    """Batch 3 with the demo CFG is 9 flow-step rows (profile max 6), batch 4 is 4 decoder rows (max 3): the
    benchmark chunks them as the pipeline does and returns every row."""
    from benchmarks.variants import runtime_variant

    folder, opened = fake_runtime
    wl = FakeWorkload()
    v = runtime_variant(backend, precision, folder, wl, ["flow_step", "decoder"], threads=None)
    for key, graph, chunks in (("flow_step/b3", "flow_step", [6, 3]), ("decoder/b4", "encodec_decoder", [3, 1])):
        engine = opened[(tag, graph)]
        trace, out = _timed_trace(v, engine, key)
        runs = [e[1] for e in trace if e[0] in ("call", "run_bound")]
        assert [next(iter(shapes.values()))[0] for shapes in runs] == chunks
        first = GRAPHS[graph][0][0]
        np.testing.assert_array_equal(out[GRAPHS[graph][1]], 2 * wl.inputs[key][first] + 1)
    flow = opened[(tag, "flow_step")]
    flow.log.clear()
    got = v.flow(wl.inputs["flow_step/b3"])  # the latent-quality solve's vector field: chunked too
    np.testing.assert_array_equal(got, 2 * wl.inputs["flow_step/b3"]["z"] + 1)
    assert [shapes["z"][0] for what, shapes in flow.log if what == "call"] == [6, 3]


# -- NVML device -------------------------------------------------------------------------------------------
UUIDS = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-cccc3333-0000"]


@pytest.fixture
def fake_nvml(monkeypatch):
    import benchmarks.memory as memory

    nvml = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetCount = lambda: len(UUIDS)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    nvml.nvmlDeviceGetUUID = lambda h: UUIDS[h[1]].encode()  # older pynvml returns bytes
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(memory, "cuda_device_uuid", lambda: None)  # as in a process without torch/CUDA
    return memory


@pytest.mark.parametrize("visible, index", [
    (None, 0), ("2", 2), ("1,0", 1), ("GPU-bbbb2222-0000", 1), ("GPU-cccc", 2), ("GPU-cccc3333-0000,0", 2),
    ("", None), ("7", None), ("GPU-ffff", None), ("MIG-aaaa", None),
])
def test_nvml_watches_the_device_cuda_computes_on(fake_nvml, monkeypatch, visible, index):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert fake_nvml.nvml_handle() == (None if index is None else ("handle", index))


def test_nvml_prefers_the_cuda_runtime_uuid(fake_nvml, monkeypatch):
    """With CUDA_DEVICE_ORDER=FASTEST_FIRST, CUDA's index 1 may be NVML's 0: the runtime's UUID decides."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert fake_nvml.nvml_handle(cuda_uuid="aaaa1111-0000") == ("handle", 0)
    assert fake_nvml.nvml_handle(cuda_uuid="GPU-cccc3333-0000") == ("handle", 2)
