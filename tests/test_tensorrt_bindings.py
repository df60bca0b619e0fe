"""The TensorRT and cuda-python API the project calls, and everything the strict stand-in models, checked
against the real bindings: TensorRT 10.13.3.9 and 11.4.0.106 (imported on stub native libraries), cuda-bindings
12 and 13.  A name the project calls that a version lacks, or a name the stand-in invents, fails here."""
from __future__ import annotations

import ast
import enum
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trt_api import real

STANDIN = Path(__file__).parent / "standins" / "tensorrt.py"

# (class, member, parameter names the project passes) — the project's calls (build.py, tensorrt_backend.py)
# and polygraphy 0.53.6's on the project's build path (review, "TensorRT API table")
USED = [
    ("Builder", "__init__", ("logger",)), ("Builder", "create_builder_config", ()),
    ("Builder", "create_network", ("flags",)), ("Builder", "create_optimization_profile", ()),
    ("Builder", "build_serialized_network", ("network", "config")), ("Builder", "num_DLA_cores", None),
    ("INetworkDefinition", "num_inputs", None), ("INetworkDefinition", "get_input", ("index",)),
    ("INetworkDefinition", "get_flag", ("flag",)), ("INetworkDefinition", "__getitem__", None),
    ("INetworkDefinition", "__len__", None), ("INetworkDefinition", "num_outputs", None),
    ("ILayer", "type", None), ("ITensor", "name", None), ("ITensor", "shape", None), ("ITensor", "dtype", None),
    ("ITensor", "is_shape_tensor", None),
    ("OnnxParser", "__init__", ("network", "logger")), ("OnnxParser", "parse_from_file", ("model",)),
    ("OnnxParser", "num_errors", None), ("OnnxParser", "get_error", ("index",)), ("OnnxParser", "clear_flag", ("flag",)),
    ("OnnxParser", "flags", None),
    ("IOptimizationProfile", "set_shape", ("input", "min", "opt", "max")),
    ("IBuilderConfig", "add_optimization_profile", ("profile",)), ("IBuilderConfig", "set_flag", ("flag",)),
    ("IBuilderConfig", "clear_flag", ("flag",)), ("IBuilderConfig", "get_flag", ("flag",)),
    ("IBuilderConfig", "set_memory_pool_limit", ("pool", "pool_size")),
    ("IBuilderConfig", "get_memory_pool_limit", ("pool",)),
    ("IBuilderConfig", "create_timing_cache", ("serialized_timing_cache",)),
    ("IBuilderConfig", "set_timing_cache", ("cache", "ignore_mismatch")), ("IBuilderConfig", "get_timing_cache", ()),
    ("IBuilderConfig", "builder_optimization_level", None), ("IBuilderConfig", "profiling_verbosity", None),
    ("IBuilderConfig", "DLA_core", None), ("IBuilderConfig", "default_device_type", None),
    ("IBuilderConfig", "num_optimization_profiles", None),
    ("ITimingCache", "combine", ("input_cache", "ignore_mismatch")), ("ITimingCache", "serialize", ()),
    ("ITimingCache", "reset", ()), ("IHostMemory", "nbytes", None),
    ("Runtime", "__init__", ("logger",)), ("Runtime", "deserialize_cuda_engine", ("serialized_engine",)),
    ("ICudaEngine", "num_io_tensors", None), ("ICudaEngine", "get_tensor_name", ("index",)),
    ("ICudaEngine", "get_tensor_mode", ("name",)), ("ICudaEngine", "get_tensor_dtype", ("name",)),
    ("ICudaEngine", "get_tensor_shape", ("name",)), ("ICudaEngine", "get_tensor_profile_shape", ("name", "profile_index")),
    ("ICudaEngine", "create_execution_context", ()), ("ICudaEngine", "serialize", ()),
    ("IExecutionContext", "set_input_shape", ("name", "shape")), ("IExecutionContext", "get_tensor_shape", ("name",)),
    ("IExecutionContext", "infer_shapes", ()), ("IExecutionContext", "set_tensor_address", ("name", "memory")),
    ("IExecutionContext", "execute_async_v3", ("stream_handle",)),
    ("Logger", "WARNING", None), ("Logger", "Severity", None), ("ILogger", "log", None),
]
USED_ENUMS = [("TensorIOMode", "INPUT"), ("TensorIOMode", "OUTPUT"), ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
              ("BuilderFlag", "TF32"), ("MemoryPoolType", "WORKSPACE"), ("ProfilingVerbosity", "DETAILED"),
              ("LayerType", "SHAPE"), ("LayerType", "QUANTIZE"), ("LayerType", "DEQUANTIZE"), ("DataType", "FLOAT"),
              ("DataType", "HALF"), ("DataType", "INT64"), ("DataType", "INT32"), ("DataType", "BOOL")]
USED_FUNCTIONS = ["nptype", "init_libnvinfer_plugins"]
# what jasco_runtime.tensorrt.device calls in cuda.bindings.runtime, with its parameter names
CUDA_USED = {"cudaGetDeviceCount": (), "cudaGetDeviceProperties": ("device",), "cudaDriverGetVersion": (),
             "cudaRuntimeGetVersion": (), "cudaMemGetInfo": (), "cudaGetErrorName": ("error",),
             "cudaMalloc": ("size",), "cudaFree": ("devPtr",), "cudaMemcpyAsync": ("dst", "src", "count", "kind", "stream"),
             "cudaStreamCreate": (), "cudaStreamSynchronize": ("stream",), "cudaStreamDestroy": ("stream",)}


@pytest.fixture(scope="module", params=[10, 11], ids=["trt10.13", "trt11.4"])
def api(request, tmp_path_factory):
    dumped, why = real.dump_tensorrt(request.param, tmp_path_factory.mktemp(f"trt{request.param}"))
    if dumped is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the real TensorRT bindings: {why}")
        pytest.skip(why)
    assert dumped["version"] == real.TRT_WHEELS[request.param][1]
    return request.param, dumped


def _member(dumped, cls: str, member: str):
    classes = dumped["classes"]
    assert cls in classes, f"tensorrt.{cls} does not exist in TensorRT {dumped['version']}"
    members = classes[cls]["members"]
    assert member in members, f"tensorrt.{cls}.{member} does not exist in TensorRT {dumped['version']}"
    return members[member]


@pytest.mark.parametrize("cls, member, params", USED, ids=[f"{c}.{m}" for c, m, _ in USED])
def test_every_call_the_project_makes_exists_with_its_parameters(api, cls, member, params):
    _, dumped = api
    doc = _member(dumped, cls, member)
    if params is None:
        return
    signature = doc.split("->")[0] if "Overloaded" not in doc else doc
    assert f"{member}(" in doc
    for p in params:
        assert f"{p}:" in signature or f"{p}: " in doc, f"{cls}.{member} has no parameter {p!r}: {doc[:300]}"


def test_every_enum_value_and_function_the_project_uses_exists(api):
    _, dumped = api
    for cls, member in USED_ENUMS:
        assert member in dumped["classes"][cls]["enum"], f"{cls}.{member}"
    for fn in USED_FUNCTIONS:
        assert fn in dumped["functions"]


def test_tensorrt_11_removed_weak_typing_and_the_project_does_not_use_it(api):
    """What 11 removed (review #21): the FP16/INT8 flags, EXPLICIT_BATCH, ILayer.precision, platform_has_fast_fp16."""
    major, dumped = api
    c = dumped["classes"]
    gone = {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & set(c["BuilderFlag"]["enum"])
    assert (gone == set()) == (major == 11)
    assert ("EXPLICIT_BATCH" in c["NetworkDefinitionCreationFlag"]["enum"]) == (major == 10)
    assert ("precision" in c["ILayer"]["members"]) == (major == 10)
    assert ("platform_has_fast_fp16" in c["Builder"]["members"]) == (major == 10)
    assert c["NetworkDefinitionCreationFlag"]["enum"]["STRONGLY_TYPED"] == (1 if major == 10 else 0)


def _standin_module(major: int):
    from standins.tensorrt import TensorRTStandin

    return TensorRTStandin(api=major).trt


def test_the_standin_models_nothing_the_real_bindings_lack(api):
    """Every class, member, enum member (with its value) and function of the stand-in's ``tensorrt`` exists in the
    real module of that version (review #22: ``LayerType.ONNX_NODE``, ``ITimingCache.parse``,
    ``INetworkDefinition.strongly_typed``, ``ICudaEngine.run`` / ``output_shapes`` were invented)."""
    major, dumped = api
    trt = _standin_module(major)
    invented = []
    for name, obj in vars(trt).items():
        if name.startswith("__"):
            continue
        if isinstance(obj, type):
            real_cls = dumped["classes"].get(name)
            if real_cls is None:
                invented.append(name)
                continue
            if issubclass(obj, enum.Enum):
                for m in obj.__members__:
                    if real_cls["enum"].get(m) != int(obj.__members__[m]):
                        invented.append(f"{name}.{m}={int(obj.__members__[m])} (real: {real_cls['enum'].get(m)})")
                continue
            # IHostMemory subclasses bytearray for the buffer protocol and refuses every inherited attribute
            # at run time (__getattribute__ / TypeError); what it exposes is its _ALLOWED names
            names = getattr(obj, "_ALLOWED", None) or [m for m, _ in inspect.getmembers(obj)]
            for m in names:
                if m.startswith("_") and m not in ("__getitem__", "__len__", "__iter__", "__call__"):
                    continue
                if m in ("__getitem__", "__len__", "__iter__", "__call__") and m not in vars(obj):
                    continue
                if m not in real_cls["members"]:
                    invented.append(f"{name}.{m}")
        elif callable(obj):
            if name not in dumped["functions"]:
                invented.append(f"{name}()")
        elif name not in dumped["values"]:
            invented.append(name)
    assert not invented, f"the stand-in models what TensorRT {dumped['version']} lacks: {invented}"


def test_the_standin_sets_no_public_attribute_the_real_class_lacks(api):
    """Instance attributes too (``self.x = ...`` in the stand-in's TensorRT classes): state is private."""
    major, dumped = api
    trt = _standin_module(major)
    tree = ast.parse(STANDIN.read_text())
    classes = {c: getattr(trt, c).__name__ for c in dir(trt) if isinstance(getattr(trt, c), type)}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        real_name = "ILayer" if node.name == "_Layer" else node.name if node.name in classes else None
        if real_name is None or real_name not in dumped["classes"]:
            continue
        for sub in ast.walk(node):
            targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target] if isinstance(sub, ast.AnnAssign) else []
            for t in targets:
                for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if (isinstance(el, ast.Attribute) and isinstance(el.value, ast.Name) and el.value.id == "self"
                            and not el.attr.startswith("_") and el.attr not in dumped["classes"][real_name]["members"]):
                        bad.append(f"{real_name}.{el.attr}")
    assert not bad, f"the stand-in sets public attributes TensorRT {dumped['version']} lacks: {sorted(set(bad))}"


@pytest.mark.parametrize("major", [12, 13])
def test_cuda_python_has_every_call_the_device_module_and_the_standin_make(major, tmp_path_factory):
    path, why = real.cuda_runtime_path(major, tmp_path_factory.mktemp(f"cuda{major}"))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the real cuda-python: {why}")
        pytest.skip(why)
    from standins import tensorrt as standin

    modelled = sorted(n for n in vars(standin.FakeCudart) if n.startswith("cuda"))
    code = ("import json\nfrom cuda.bindings import runtime as rt\n"
            f"names = {json.dumps(sorted(set(CUDA_USED) | set(modelled)))}\n"
            "out = {n: ((getattr(rt, n).__doc__ or '').splitlines() or [''])[0] if hasattr(rt, n) else None for n in names}\n"
            "out['kinds'] = {k.name: int(k) for k in rt.cudaMemcpyKind}\n"
            "out['count'] = [x.name if hasattr(x, 'name') else x for x in rt.cudaGetDeviceCount()]\n"
            "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    found = json.loads(res.stdout)
    for name, params in CUDA_USED.items():
        assert found[name], f"cuda.bindings.runtime.{name} does not exist in cuda-bindings {major}"
        assert found[name].startswith(f"{name}("), found[name]
        for p in params:
            assert p in found[name], f"{name} has no parameter {p}: {found[name]}"
    for name in modelled:
        assert found[name], f"the stand-in models cuda.bindings.runtime.{name}, which cuda-bindings {major} lacks"
    assert found["kinds"] == {k.name: int(k) for k in standin.cudaMemcpyKind}
    # without a driver the real runtime says cudaErrorInsufficientDriver (35), not cudaErrorNoDevice
    assert found["count"][0] in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice")
