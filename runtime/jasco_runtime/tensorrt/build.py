"""Build TensorRT engines from an export folder with polygraphy's loaders (one implementation for
``jasco-run build-engines`` on the target and ``jasco-export --backend trt`` on a workstation).

Per graph: ``NetworkFromOnnxPath(strongly_typed=True)`` parses the ONNX the manifest names (the mixed
fp16/fp32 graph, so the engine keeps the exported fp32 islands; fp32-only graphs such as the drums encoder
give an fp32 engine), ``CreateConfig`` adds one optimisation profile from the manifest, clears TF32 (on by
default in TensorRT; it would round the fp32 parts to 10-bit mantissas), limits the workspace and loads the
folder's timing cache; ``EngineFromNetwork`` builds (and deserialises, so a plan that does not load here
fails now, not at generation time) and ``SaveEngine`` writes the plan atomically.  Graphs are built one at a
time and freed in between (8–16 GB boards).
"""
from __future__ import annotations

import dataclasses
import gc
import os
import time
import logging
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, JascoError, first_line
from ..export_folder import ArtifactKey, Backend, ExportFolder, Precision
from ..files import atomic_write
from .device import current_device
from .profiles import Profile, profile_shapes
from .versions import require_polygraphy, require_tensorrt, tensorrt_versions

TIMING_CACHE = "timing.cache"
Log = tp.Callable[[str], None]

logger = logging.getLogger(__name__)


class EngineBuildError(JascoError):
    """TensorRT is there but parsing a graph or building its engine failed."""


@dataclass
class BuildOptions:
    graphs: tp.Optional[tp.Sequence[str]] = None  # default: the graphs the pipeline runs
    workspace_gb: tp.Optional[float] = None  # TensorRT's workspace pool limit (default: device memory)
    builder_optimization_level: tp.Optional[int] = None  # 0..5 (TensorRT default 3; lower builds faster)
    max_batch: tp.Optional[int] = None  # CFG rows per call (default: the manifest's profile)

    def check(self) -> None:
        if self.workspace_gb is not None and not 0 < self.workspace_gb <= 1024:
            raise InputError(f"--workspace-gb must be in (0, 1024], got {self.workspace_gb}")
        if self.builder_optimization_level is not None and not 0 <= self.builder_optimization_level <= 5:
            raise InputError(f"--builder-optimization-level must be 0..5, got {self.builder_optimization_level}")
        if self.max_batch is not None and not 1 <= self.max_batch <= 256:
            raise InputError(f"--max-batch must be 1..256 CFG rows, got {self.max_batch}")


def _print(msg: str) -> None:
    """Progress of a build (minutes per engine) through logging: the CLI shows it, a library user can silence it."""
    logger.info("%s", msg)


def _no_cuda(exc: BaseException) -> str:
    return (f"TensorRT could not start on this GPU ({type(exc).__name__}: {_first_line(exc)}); the NVIDIA driver must "
            "support TensorRT's CUDA major (nvidia-smi: driver >= 580 for tensorrt-cu13, else tensorrt-cu12)")


def usable_timing_cache(path: tp.Optional[Path], log: Log = _print) -> tp.Optional[bytes]:
    """The timing cache's bytes if TensorRT accepts it on this GPU, else None (it was written by another
    GPU or TensorRT version, or is damaged: polygraphy would ignore ``set_timing_cache``'s refusal)."""
    if path is None or not path.is_file():
        return None
    trt = require_tensorrt()
    from polygraphy.backend.trt import util as trt_util

    data = path.read_bytes()
    try:
        builder = trt.Builder(trt_util.get_trt_logger())
    except TypeError as exc:  # pybind11: "factory function returned nullptr" (TensorRT could not start CUDA)
        raise EngineBuildError(_no_cuda(exc)) from None
    config = builder.create_builder_config()
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"timing cache {path.name} was written by another GPU or TensorRT version (or is damaged); starting a new one")
        return None
    return data


def build_engine(onnx_path: Path, plan_path: Path, profile: Profile, timing_cache: tp.Optional[Path] = None,
                 opts: tp.Optional[BuildOptions] = None, log: Log = _print) -> tp.Dict[str, tp.Any]:
    """Build one strongly typed engine from ``onnx_path`` and write it atomically to ``plan_path``.
    ``timing_cache`` is read when TensorRT accepts it and rewritten (extended) after the build."""
    opts = opts or BuildOptions()
    trt = require_tensorrt()
    require_polygraphy()
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, SaveEngine
    from polygraphy.backend.trt import Profile as PolygraphyProfile
    from polygraphy.exception import PolygraphyException

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX graph {onnx_path} is missing; re-export the folder with jasco-export")
    pg_profile = PolygraphyProfile()
    for name, (mn, opt, mx) in profile.items():
        pg_profile.add(name, mn, opt, mx)
    cached = usable_timing_cache(timing_cache, log) is not None
    pools = None
    if opts.workspace_gb is not None:
        pools = {trt.MemoryPoolType.WORKSPACE: int(opts.workspace_gb * 2**30)}
    # polygraphy appends the new timings to the cache it saves; write them beside it, then rename
    cache_tmp = timing_cache.with_name(f".{timing_cache.name}.{os.getpid()}.tmp") if timing_cache else None
    load = open(timing_cache, "rb") if cached else None  # a file object: polygraphy then takes no lock file
    config = CreateConfig(tf32=False, profiles=[pg_profile], load_timing_cache=load, memory_pool_limits=pools,
                          builder_optimization_level=opts.builder_optimization_level)
    t0 = time.perf_counter()
    engine = None
    try:
        engine = EngineFromNetwork(NetworkFromOnnxPath(str(onnx_path), strongly_typed=True), config=config,
                                   save_timing_cache=str(cache_tmp) if cache_tmp else None)()
        seconds = time.perf_counter() - t0
        atomic_write(plan_path, lambda f: SaveEngine(engine, f)())
        if cache_tmp is not None and cache_tmp.is_file():
            os.replace(cache_tmp, timing_cache)
    except TypeError as exc:
        if "nullptr" not in str(exc):
            raise
        raise EngineBuildError(_no_cuda(exc)) from None
    except PolygraphyException as exc:
        raise EngineBuildError(f"TensorRT could not build {plan_path.name} from {onnx_path.name}: {first_line(exc)} "
                               "(TensorRT's errors are printed above)") from None
    finally:
        if load is not None:
            load.close()
        if cache_tmp is not None:
            for leftover in (cache_tmp, Path(f"{cache_tmp}.lock")):
                if leftover.exists():
                    leftover.unlink()
        del engine
        gc.collect()  # one graph at a time: the builder, network and engine go before the next graph
    return {"source": onnx_path.name, "seconds": round(seconds, 2), "strongly_typed": True, "tf32": False,
            "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()},
            "workspace_gb": opts.workspace_gb, "builder_optimization_level": opts.builder_optimization_level,
            "timing_cache_reused": cached}


def build_folder(folder: ExportFolder, opts: tp.Optional[BuildOptions] = None, log: Log = _print) -> tp.List[ArtifactKey]:
    """Build the engines of ``folder`` (the runtime graphs, or ``opts.graphs``), register each in the
    manifest as it is written, and record the device and versions they were built with."""
    opts = opts or BuildOptions()
    opts.check()
    trt = require_tensorrt()
    require_polygraphy()
    device = current_device()
    graphs = folder.graphs
    names = list(opts.graphs) if opts.graphs else [n for n, g in graphs.items() if g.role == "runtime"]
    unknown = [n for n in names if n not in graphs]
    if unknown:
        raise InputError(f"{folder.folder} has no graph {', '.join(unknown)}; choose from {', '.join(graphs)}")
    built_on = {"trt_version": str(trt.__version__), **device.record(),
                "polygraphy": tensorrt_versions().get("polygraphy", "unknown")}
    record = dataclasses.replace(folder.tensorrt)
    previous = record.device or {}
    if previous and any(previous.get(k) != built_on[k] for k in ("trt_version", "compute_capability")):
        for a in folder.artifacts():  # engines of another GPU/TensorRT cannot run beside the new ones
            if a.key.runtime is Backend.TENSORRT and a.key.graph not in names:
                log(f"dropping {a.file}: built with TensorRT {previous.get('trt_version')} on sm "
                    f"{previous.get('compute_capability')}, not rebuilt now (add it to --graphs)")
                folder.remove_artifact(a.key, save=False)
    log(f"TensorRT {trt.__version__} on {device.name} (sm {device.compute_capability}); "
        f"graphs: {', '.join(names)}")
    cache = folder.folder / TIMING_CACHE
    keys = []
    for name in names:
        key = folder.resolve(name, Backend.TENSORRT, Precision.FP16)
        source = ArtifactKey(name, key.precision, Backend.ONNXRUNTIME)
        profile = profile_shapes(graphs[name], opts.max_batch)
        log(f"building {key} from {folder.artifact(source).file}")
        info = build_engine(folder.path(source), folder.folder / key.default_file, profile, cache, opts, log)
        folder.add_artifact(key, save=False, **info)
        record.skipped, record.device = None, built_on
        folder.set_tensorrt(record)  # saves the manifest: each finished engine is registered (with its digests)
        log(f"{key.default_file}: {info['seconds']:.1f} s")
        keys.append(key)
    return keys
