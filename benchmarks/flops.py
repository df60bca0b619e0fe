"""FLOPs of one flow-step evaluation, counted from the architecture, and the device peaks we compare to.

Counting convention: 2 FLOPs per multiply-accumulate of every matrix product (linear layers and the two
attention products); element-wise work (LayerNorm, GELU, softmax, residual adds, the sinusoids) is
left out — it is < 1 % of the total at every JASCO size and is what ``torch.utils.flop_counter`` leaves
out too, so the two counts can be compared directly (tests/test_benchmarks.py does).
"""
from __future__ import annotations

import os
import platform
import re
import time
import typing as tp

import numpy as np


def flow_step_flops(tc: tp.Any, rows: int, frames: int, text_len: int) -> tp.Dict[str, int]:
    """FLOPs of one flow-step evaluation over ``rows`` CFG rows of ``frames`` latent frames.

    ``tc`` is a :class:`jasco_export.reference.config.TransformerConfig` (or anything with the same fields).
    Returns the breakdown and its ``total``. Per layer and row (d = dim, F = hidden, T, L):

    - self-attention: q, k, v, out projections 4·T·d², scores T²·d, weighted values T²·d
    - cross-attention: q, out 2·T·d², k, v from the text 2·L·d², scores T·L·d, values T·L·d
    - feed-forward: 2·T·d·F
    - U-Net skip projections (if any): T·2d·d for each of the num_layers // 2 projections
    and once per row: the input embedding T·(flow + temporal condition dims)·d, the time embedding MLP
    (128→512→512→d), and the output projection T·d·flow_dim.
    """
    d, T, L, n = int(tc.dim), int(frames), int(text_len), int(tc.num_layers)
    ff = int(tc.dim_feedforward)
    in_dim = int(tc.flow_dim + tc.chords_dim + tc.drums_dim + tc.melody_dim)
    temb = int(tc.time_embedding_dim)
    macs = {
        "self_attn_proj": n * 4 * T * d * d,
        "self_attn_scores_values": n * 2 * T * T * d,
        "cross_attn_proj": n * (2 * T * d * d + 2 * L * d * d),
        "cross_attn_scores_values": n * 2 * T * L * d,
        "feed_forward": n * 2 * T * d * ff,
        "skip_projections": (n // 2) * T * 2 * d * d if getattr(tc, "skip_connections", False) else 0,
        "embed_in_out": T * in_dim * d + T * d * int(tc.flow_dim),
        "time_embedding": temb * 4 * temb + 4 * temb * 4 * temb + 4 * temb * d,
    }
    out = {k: 2 * v * rows for k, v in macs.items()}
    out["total"] = sum(out.values())
    return out


# -- the machine --------------------------------------------------------------------------------------
def cpu_info() -> tp.Dict[str, tp.Any]:
    """Model name, core counts, SIMD flags and clocks as the OS reports them (lscpu / /proc/cpuinfo)."""
    info: tp.Dict[str, tp.Any] = {"machine": platform.machine(), "logical_cpus": os.cpu_count()}
    flags: tp.Set[str] = set()
    mhz: tp.List[float] = []
    try:
        text = open("/proc/cpuinfo").read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["model_name"] = m.group(1).strip() if m else platform.processor()
        fl = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(fl.group(1).split()) if fl else set()
        mhz = [float(x) for x in re.findall(r"^cpu MHz\s*:\s*([\d.]+)$", text, re.M)]
    except OSError:
        info["model_name"] = platform.processor()
    info["physical_cores"] = os.cpu_count()
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False) or info["physical_cores"]
        f = psutil.cpu_freq()
        if f is not None and f.max:
            info["max_mhz"] = float(f.max)
    except Exception:  # pragma: no cover - psutil is optional
        pass
    info["mhz_reported"] = max(mhz) if mhz else None
    info["simd"] = sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16",
                                   "amx_int8", "avx512_fp16"})
    return info


def nominal_cpu_peak(info: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Nominal fp32 peak = cores × FMA units × SIMD lanes × 2 × clock; every factor is stated.

    Assumptions (labelled in the output): 2 FMA units per core; 16 fp32 lanes with AVX-512, 8 with AVX2;
    the clock is the highest one the OS reports (under a hypervisor that is usually the TSC/base clock,
    so boost clocks can make measured rates exceed this number).
    """
    simd = set(info.get("simd", []))
    lanes = 16 if "avx512f" in simd else 8 if "avx2" in simd else 4
    mhz = info.get("max_mhz") or info.get("mhz_reported")
    if not mhz:
        return {"fp32_gflops": None, "note": "no clock reported; nominal peak unknown"}
    cores = int(info.get("physical_cores") or 1)
    gflops = cores * 2 * lanes * 2 * float(mhz) / 1e3
    return {"fp32_gflops": gflops,
            "formula": f"{cores} cores × 2 FMA units × {lanes} fp32 lanes × 2 FLOP × {float(mhz) / 1e3:.2f} GHz",
            "note": "assumed 2 FMA units/core; clock = highest the OS reports (base/TSC in a VM, not boost)"}


def _best_rate(fn: tp.Callable[[], tp.Any], flops: float, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9


def measure_cpu_gemm(threads: int, size: tp.Tuple[int, int, int] = (1536, 1024, 4096), repeats: int = 5,
                     int8: bool = True) -> tp.Dict[str, tp.Any]:
    """Practical CPU GEMM rates (GFLOP/s, best of ``repeats``) at a flow-step-like shape M×K·K×N.

    fp32 through numpy (OpenBLAS), torch (MKL/oneDNN) and ONNX Runtime (MLAS), bf16 through torch
    (oneDNN), and int8 through ONNX Runtime's MatMulInteger (what dynamic quantisation runs). The fp32
    maximum is the practical fp32 peak; bf16 and int8 peaks are the single measurement each.
    """
    M, K, N = size
    flops = 2.0 * M * K * N
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = (rng.standard_normal((K, N), dtype=np.float32) / np.float32(np.sqrt(K))).astype(np.float32)
    out: tp.Dict[str, tp.Any] = {"shape": [M, K, N], "threads": threads}
    out["numpy_fp32"] = _best_rate(lambda: a @ b, flops, repeats)
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b).t().contiguous()
        with torch.no_grad():
            out["torch_fp32"] = _best_rate(lambda: torch.nn.functional.linear(ta, tb), flops, repeats)
            ha, hb = ta.bfloat16(), tb.bfloat16()
            out["torch_bf16"] = _best_rate(lambda: torch.nn.functional.linear(ha, hb), flops, repeats)
    except ImportError:  # pragma: no cover
        pass
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        def session(nodes, inits, x_type):
            g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", x_type, [M, K])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT if x_type == TensorProto.FLOAT
                                                                 else TensorProto.INT32, [M, N])], inits)
            model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = min(model.ir_version, 9)
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.log_severity_level = 3
            return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

        s = session([helper.make_node("MatMul", ["x", "W"], ["y"])], [numpy_helper.from_array(b, "W")], TensorProto.FLOAT)
        out["onnxruntime_fp32"] = _best_rate(lambda: s.run(None, {"x": a}), flops, repeats)
        if int8:
            qa = rng.integers(0, 255, (M, K), dtype=np.uint8)
            qb = rng.integers(-127, 127, (K, N), dtype=np.int8)
            s8 = session([helper.make_node("MatMulInteger", ["x", "W"], ["y"])], [numpy_helper.from_array(qb, "W")],
                         TensorProto.UINT8)
            out["onnxruntime_int8"] = _best_rate(lambda: s8.run(None, {"x": qa}), flops, repeats)
    except ImportError:  # pragma: no cover
        pass
    if "torch_bf16" in out:
        out["practical_bf16_gflops"] = out["torch_bf16"]
    fp32 = {k: v for k, v in out.items() if k.endswith("_fp32")}
    out["practical_fp32_gflops"] = max(fp32.values())
    out["practical_fp32_source"] = max(fp32, key=fp32.get)
    if "onnxruntime_int8" in out:
        out["practical_int8_gops"] = out["onnxruntime_int8"]
    return out


# -- GPUs --------------------------------------------------------------------------------------------
GPU_PEAKS_TFLOPS = {  # dense, no sparsity: (fp16/bf16 tensor core, fp32 non-tensor), vendor data sheets
    "H200": (989.0, 67.0),
    "H100 SXM": (989.0, 67.0),
    "H100 PCIe": (756.0, 51.0),
    "H100 NVL": (835.0, 60.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6),
    "L4": (121.0, 30.3),
    "A10": (125.0, 31.2),
    "RTX 4090": (165.2, 82.6),
    "T4": (65.0, 8.1),
}


def nominal_gpu_peak(name: str) -> tp.Dict[str, tp.Any]:
    """Data-sheet peaks for a known GPU name (first table key contained in the name)."""
    for key, (fp16, fp32) in GPU_PEAKS_TFLOPS.items():
        if key.lower() in name.lower():
            return {"fp16_tflops": fp16, "fp32_tflops": fp32, "matched": key,
                    "note": "vendor data sheet, dense tensor-core fp16 / non-tensor fp32"}
    return {"fp16_tflops": None, "fp32_tflops": None, "note": f"no data-sheet entry for {name!r}"}


def measure_gpu_gemm(size: int = 8192, repeats: int = 10) -> tp.Dict[str, tp.Any]:
    """Practical GPU matmul rates (TFLOP/s) with torch, timed with CUDA events."""
    import torch

    out: tp.Dict[str, tp.Any] = {"shape": [size, size, size]}
    for dtype, key in ((torch.float16, "torch_fp16"), (torch.float32, "torch_fp32")):
        a = torch.randn(size, size, device="cuda", dtype=dtype)
        b = torch.randn(size, size, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(repeats):
            start.record()
            a @ b
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        out[key] = 2.0 * size ** 3 / best / 1e12
        del a, b
    return out
