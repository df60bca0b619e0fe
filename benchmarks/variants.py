"""Backends × precisions as comparable "variants": the same inputs, one callable per component.

================  =========================================================================================
backend           what runs
================  =========================================================================================
torch             PyTorch eager on the CPU (the reference port, numerically audiocraft): fp32, or bf16
                  autocast; the CPU baseline is ``torch:fp32``
torch-cuda        PyTorch eager on the GPU: fp32, or fp16 / bf16 autocast; the GPU baseline is
                  ``torch-cuda:fp16`` (what audiocraft users run: autocast float16)
torch-compile     ``torch.compile`` of the flow step (GPU if present, else CPU); other components eager
ort-cpu           the torch-free runtime's ONNX Runtime engines on the CPU: fp32 (as exported), fp32-fused
                  (flow step with fused attention, :mod:`jasco_export.graphs.fusion`), fp16 (mixed graph), int8
                  (fused flow step with int8 dynamic-quantised linears, :mod:`jasco_export.graphs.quantize`)
ort-cuda          ONNX Runtime CUDA EP with IOBinding: fp32, fp32-fused, fp16
trt               TensorRT fp16 engines (``jasco-export --backend trt``) through the runtime's engine
================  =========================================================================================

Every variant exposes ``call[key]`` (a no-argument closure over pre-placed inputs, returning the outputs
in host memory), ``flow(inputs)`` (numpy in/out, for the latent-quality solve) and ``e2e[key]()`` (one
full generation). Runtime variants run through ``jasco_runtime`` exactly as deployed (engines opened by
``open_engine``, rows chunked to the engine profile's max batch with the pipeline's ``row_chunks``,
``JascoPipeline`` end to end); torch variants through the reference modules the graphs were exported
from. Every backend follows the same timing rules (:data:`TIMING_RULES`).
"""
from __future__ import annotations

import contextlib
import copy
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "torch-cuda", "torch-compile", "ort-cpu", "ort-cuda", "trt")
PRECISIONS = ("fp32", "fp32-fused", "fp16", "bf16", "int8")
GPU_BACKENDS = ("torch-cuda", "ort-cuda", "trt")
COMPONENTS = ("text_encoder", "drums_encoder", "flow_step", "decoder", "end_to_end")
GRAPH_OF = {"text_encoder": "text_encoder", "drums_encoder": "drums_encoder", "flow_step": "flow_step",
            "decoder": "encodec_decoder"}
CPU_BASELINE = "torch:fp32"
GPU_BASELINE = "torch-cuda:fp16"
TIMING_RULES = (
    "Every backend is timed alike: a component call starts with its inputs already in the memory the backend "
    "computes in (host memory on the CPU; on a GPU, torch tensors, ONNX Runtime OrtValues bound through IOBinding "
    "and TensorRT device buffers, all placed before the clock starts, as the pipeline keeps the conditions "
    "resident for a whole solve) and stops when every output is a numpy array in host memory, so the "
    "device-to-host copies and the synchronisation they imply are inside the clock for every GPU backend. "
    "Runtime engines run the rows in chunks of at most their profile's max batch, as the pipeline does; "
    "PyTorch runs all rows at once. End to end is one whole generation, wall clock, host in and host out.")

SUPPORTED = {
    "torch": {"fp32": "PyTorch eager fp32 (CPU)", "bf16": "PyTorch eager, bf16 autocast (CPU)"},
    "torch-cuda": {"fp32": "PyTorch eager fp32 (GPU)", "fp16": "PyTorch eager, fp16 autocast (GPU)",
                   "bf16": "PyTorch eager, bf16 autocast (GPU)"},
    "torch-compile": {"fp32": "torch.compile flow step fp32", "fp16": "torch.compile flow step, fp16 autocast",
                      "bf16": "torch.compile flow step, bf16 autocast"},
    "ort-cpu": {"fp32": "ONNX Runtime CPU fp32 (graphs as exported)",
                "fp32-fused": "ONNX Runtime CPU fp32, attention-fused flow step (jasco_export/fusion.py)",
                "fp16": "ONNX Runtime CPU, mixed fp16 graph",
                "int8": "ONNX Runtime CPU, attention-fused flow step with int8 dynamic-quantised linears"},
    "ort-cuda": {"fp32": "ONNX Runtime CUDA fp32 (IOBinding)",
                 "fp32-fused": "ONNX Runtime CUDA fp32, attention-fused flow step (IOBinding)",
                 "fp16": "ONNX Runtime CUDA, mixed fp16 (IOBinding)"},
    "trt": {"fp16": "TensorRT fp16 engines"},
}

WHY_NOT = {
    ("ort-cpu", "bf16"): "ONNX Runtime's CPU execution provider has no bf16 MatMul kernels on x86",
    ("torch", "fp16"): "fp16 autocast on CPU is not what anyone runs; bf16 is the CPU reduced precision",
    ("torch", "int8"): "PyTorch eager has no int8 path for this model without a quantisation workflow",
    ("torch", "fp32-fused"): "fp32-fused is an ONNX graph transform",
    ("trt", "fp32"): "the exporter builds fp16 TensorRT engines only",
}


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def unsupported_reason(backend: str, precision: str) -> tp.Optional[str]:
    """None when the combination is benchmarked, else why not (recorded in the JSON)."""
    if backend not in SUPPORTED:
        return f"unknown backend (choose from {', '.join(BACKENDS)})"
    if precision not in SUPPORTED[backend]:
        why = WHY_NOT.get((backend, precision), "")
        return f"{backend} has no {precision} path here (has {', '.join(SUPPORTED[backend])}){': ' + why if why else ''}"
    if backend in GPU_BACKENDS and not cuda_available():
        return "no CUDA device"
    if backend == "ort-cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if backend == "trt":
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            return "tensorrt is not installed"
    return None


@dataclass
class Variant:
    backend: str
    precision: str
    device: str
    label: str
    call: tp.Dict[str, tp.Callable[[], tp.Any]] = field(default_factory=dict)
    artifacts: tp.Dict[str, tp.Dict[str, tp.Any]] = field(default_factory=dict)
    notes: tp.List[str] = field(default_factory=list)
    flow: tp.Optional[tp.Callable[[tp.Dict[str, np.ndarray]], np.ndarray]] = None
    e2e: tp.Dict[str, tp.Callable[[], tp.Tuple[np.ndarray, tp.Dict[str, float], int]]] = field(default_factory=dict)
    e2e_skip: tp.Optional[str] = None
    _keep: tp.List[tp.Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.precision}"


def to_host(x: tp.Any) -> tp.Any:
    """Every output of a call as numpy in host memory (torch tensors, OrtValues, TensorRT device outputs;
    tuples and dicts element-wise): the copy that ends each timed call."""
    if isinstance(x, dict):
        return {k: to_host(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(to_host(v) for v in x)
    if hasattr(x, "detach"):
        x = x.detach()
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).cpu().numpy()  # numpy has no bf16
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        return x.numpy()
    return np.asarray(x)


def to_numpy(x: tp.Any) -> np.ndarray:
    """The principal output of a call (first of tuples / dicts) as float32 numpy, for comparisons."""
    x = to_host(x)
    if isinstance(x, dict):
        x = next(iter(x.values()))
    if isinstance(x, tuple):
        x = x[0]
    return np.asarray(x, dtype=np.float32)


# -- torch ---------------------------------------------------------------------------------------------
_NOT_USED = {"flow_step": ("flow.condition_provider.",), "drums_encoder": ("cond.compression_model.model.decoder.",)}


def _param_bytes(module: tp.Any, component: str) -> int:
    """Bytes of the parameters a component's computation uses (the wrappers also hold unused modules)."""
    skip = _NOT_USED.get(component, ())
    return int(sum(p.numel() * p.element_size() for n, p in module.named_parameters() if not n.startswith(skip)))


def _autocast(device: str, precision: str):
    import torch

    if precision == "fp16":
        return torch.autocast(device, dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def jasco_on(jasco: tp.Any, device: str) -> tp.Any:
    """The reference model on ``device`` (a deep copy for CUDA: T5 and EnCodec included)."""
    if device == "cpu":
        return jasco
    new = copy.deepcopy(jasco)
    new.model.to(device)
    t5c = new.model.condition_provider.conditioners["description"]
    if t5c.t5 is not None:
        t5c.t5.to(device)
    return new


def torch_variant(backend: str, precision: str, jasco: tp.Any, workload: tp.Any, components: tp.Sequence[str]) -> Variant:
    import torch

    from jasco_export.graphs.spec import declare_graphs

    compile_ = backend == "torch-compile"
    device = "cuda" if backend == "torch-cuda" or (compile_ and cuda_available()) else "cpu"
    v = Variant(backend, precision, device, SUPPORTED[backend][precision])
    ref = jasco_on(jasco, device)
    graphs = declare_graphs(ref)
    v._keep.append(ref)

    def bind(module: tp.Any, inputs: tp.Dict[str, np.ndarray], order: tp.Sequence[str]) -> tp.Callable[[], tp.Any]:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[k])).to(device) for k in order]  # before the clock

        def run() -> tp.Any:
            with torch.no_grad(), _autocast(device, precision):
                return to_host(module(*args))
        return run

    modules = {c: graphs[g].module.eval() for c, g in GRAPH_OF.items() if g in graphs}
    flow_module = modules["flow_step"]
    if compile_:
        flow_module = torch.compile(flow_module)
        v.notes.append("only the flow step is compiled; the other components run eager")
    order = {c: [s.name for s in graphs[g].inputs] for c, g in GRAPH_OF.items() if g in graphs}
    for key, inputs in workload.component_inputs(components):
        comp = key.split("/")[0]
        module = flow_module if comp == "flow_step" else modules[comp]
        v.call[key] = bind(module, inputs, order[comp])
        v.artifacts[comp] = {"bytes": _param_bytes(modules[comp], comp), "what": "parameters the component uses"}

    def flow(inputs: tp.Dict[str, np.ndarray]) -> np.ndarray:
        return to_numpy(bind(flow_module, inputs, order["flow_step"])())
    v.flow = flow

    if compile_:
        v.e2e_skip = "torch.compile variant measures the flow step only"
    elif workload.solver not in ("euler", "dopri5"):
        v.e2e_skip = f"audiocraft (and the reference) offer euler and dopri5 only, not {workload.solver}"
    elif "end_to_end" in components:
        def make_e2e(bi: tp.Any) -> tp.Callable[[], tp.Tuple[np.ndarray, tp.Dict[str, float], int, tp.Dict]]:
            def e2e() -> tp.Tuple[np.ndarray, tp.Dict[str, float], int, tp.Dict]:
                import time

                params = {"euler": True, "euler_steps": workload.steps} if workload.solver == "euler" else {}
                ref.set_generation_params(cfg_coef_all=workload.cfg[0], cfg_coef_txt=workload.cfg[1], **params)
                t0 = time.perf_counter()
                with _autocast(device, precision):
                    out = ref.generate_music(bi.descriptions, drums_wav=torch.from_numpy(workload.drums_wav)[None],
                                             drums_sample_rate=workload.sample_rate, chords=workload.chords or None,
                                             init_noise=torch.from_numpy(bi.noise), return_output=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                return to_numpy(out.latents), {"total": time.perf_counter() - t0}, int(out.nfe)
            return e2e

        for b, bi in workload.batches.items():
            v.e2e[f"end_to_end/b{b}"] = make_e2e(bi)
    return v


# -- runtime (ONNX Runtime, TensorRT) -------------------------------------------------------------------
def _concat_rows(parts: tp.Sequence[tp.Dict[str, np.ndarray]]) -> tp.Dict[str, np.ndarray]:
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def call_chunked(engine: tp.Any, inputs: tp.Mapping[str, np.ndarray]) -> tp.Dict[str, np.ndarray]:
    """``engine`` on host inputs over row chunks of its own profile (the pipeline's ``run_chunked``)."""
    from jasco_runtime.backends import run_chunked

    return run_chunked(engine, {k: np.ascontiguousarray(inputs[k]) for k in engine.input_names})


def bind_engine(engine: tp.Any, inputs: tp.Mapping[str, np.ndarray],
                keep: contextlib.ExitStack) -> tp.Callable[[], tp.Dict[str, np.ndarray]]:
    """A timed closure under :data:`TIMING_RULES`: the inputs are split into row chunks of the engine's own
    profile (``engine.max_batch``: TensorRT engines may be built with a smaller ``--max-batch``) and bound to its
    device here, before any clock (``Engine.bind``, held until ``keep`` closes); each call runs every chunk and
    returns all outputs in host memory."""
    from jasco_runtime.backends.base import bound_chunks

    chunks = keep.enter_context(bound_chunks(engine, {k: np.ascontiguousarray(inputs[k]) for k in engine.input_names}))
    return lambda: _concat_rows([engine.run(bound) for _, bound in chunks])


def runtime_variant(backend: str, precision: str, export_dir: Path, workload: tp.Any, components: tp.Sequence[str],
                    threads: tp.Optional[int]) -> Variant:
    """A variant of the torch-free runtime (imports numpy + the engine library only, never torch)."""
    from jasco_runtime.backends import open_engine
    from jasco_runtime.export_folder import ArtifactKey, Backend, ExportFolder
    from jasco_runtime.pipeline import JascoPipeline

    folder = ExportFolder.open(export_dir)
    on_gpu = backend in ("ort-cuda", "trt")
    v = Variant(backend, precision, "cuda" if on_gpu else "cpu", SUPPORTED[backend][precision])
    needed = {GRAPH_OF[c] for c in components if c in GRAPH_OF}
    if "end_to_end" in components:
        needed |= set(folder.runtime_graphs())
    engines: tp.Dict[str, tp.Any] = {}
    for graph in sorted(needed):
        if backend == "trt":
            key = folder.resolve(graph, "tensorrt", "fp16")
        elif precision == "fp32-fused":
            key = ArtifactKey(graph, "fp32", "onnx", "fused" if graph == "flow_step" else "")
        else:
            key = folder.resolve(graph, "onnx", precision)
            if key.precision != precision:
                v.notes.append(f"{graph}: no {precision} graph, runs {key.precision}")
        engines[graph] = open_engine(folder, key, ["cuda"] if backend == "ort-cuda" else ["cpu"], threads=threads)
        comp = next((c for c, g in GRAPH_OF.items() if g == graph), graph)  # solver_step: the e2e ODE loop
        v.artifacts[comp] = {"file": folder.artifact(key).file, "artifact": str(key)}
    v._keep.append(engines)
    keep = contextlib.ExitStack()  # device copies of the timed inputs, freed with the variant
    v._keep.append(keep)

    for key, inputs in workload.component_inputs(components):
        graph = GRAPH_OF[key.split("/")[0]]
        v.call[key] = bind_engine(engines[graph], inputs, keep)

    if "flow_step" in engines:
        fs = engines["flow_step"]
        v.flow = lambda inputs: np.asarray(call_chunked(fs, inputs)["v"], np.float32)

    if "end_to_end" in components:
        from jasco_runtime.engine_set import EngineSet
        from jasco_runtime.pipeline import Resolution

        fs = engines["flow_step"]
        resolution = Resolution(Backend.parse(backend).value, precision,
                                None if backend == "trt" else tuple(fs.providers), fs.device)
        pipe = JascoPipeline(folder, EngineSet(sorted(engines), engines.__getitem__), resolution)

        def make_e2e(bi: tp.Any) -> tp.Callable[[], tp.Tuple[np.ndarray, tp.Dict[str, float], int, tp.Dict]]:
            def e2e() -> tp.Tuple[np.ndarray, tp.Dict[str, float], int, tp.Dict]:
                res = pipe.generate(bi.descriptions, chords=workload.chords or None, drums=workload.drums_wav,
                                    drums_sample_rate=workload.sample_rate, cfg_coef_all=workload.cfg[0],
                                    cfg_coef_txt=workload.cfg[1], solver=workload.solver, steps=workload.steps,
                                    init_noise=bi.noise, progress=False)
                return res.latents, dict(res.timings), int(res.nfe), {**res.traffic, "ode_loop": res.ode_loop}
            return e2e

        for b, bi in workload.batches.items():
            v.e2e[f"end_to_end/b{b}"] = make_e2e(bi)
    return v
