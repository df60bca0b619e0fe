"""``JascoPipeline``: JASCO generation from exported graphs with numpy only (no torch).

The pipeline opens an export folder (backend, providers and precision resolved once, :class:`Resolution`),
prepares requests (:mod:`jasco_runtime.conditioning`) and plans a single clip over the solve owner
(:class:`~jasco_runtime.generation.GenerationCore`): encode the CFG batch (audiocraft/models/flow_matching.py
``_multi_source_cfg_preprocess``), solve with the guided field, decode.  Longer songs are planned by
:mod:`jasco_runtime.longform`, batched requests by :mod:`jasco_runtime.batching`.
"""
from __future__ import annotations

import logging
import os
import typing as tp
from dataclasses import dataclass

import numpy as np

from . import longform, windows
from .backends import available_backends, open_engine, tensorrt_unavailable_reason
from .backends.base import Traffic
from .conditioning import Conditions, ConditionProvider, PreparedRequest  # noqa: F401  (Conditions re-exported)
from .engine_set import EngineSet
from .errors import InputError
from .export_folder import ArtifactKey, ExportFolder
from .generation import Cancel, GenerationCore, GenerationResult, Member  # noqa: F401  (re-exported)
from .request import ChordsInput, GenerationRequest, ResolvedRequest
from .timing import clock

logger = logging.getLogger(__name__)
GPU_PROVIDERS = ("cuda", "cudaexecutionprovider", "tensorrt", "tensorrtexecutionprovider")


@dataclass(frozen=True)
class Resolution:
    """What a pipeline runs, decided once when it opens and reported from here (``--json``, ``/v1/models``,
    benchmark labels): the backend, the precision of the flow step and the providers ONNX Runtime really uses."""

    backend: str  # onnxruntime | tensorrt
    precision: str  # fp32 | fp16 | int8
    providers: tp.Optional[tp.Tuple[str, ...]]  # ONNX Runtime: the session's providers, in use order
    device: str  # cpu | cuda

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return {"backend": self.backend, "precision": self.precision,
                "providers": list(self.providers) if self.providers is not None else None, "device": self.device}


def _wants_gpu(backend: str, providers: tp.Optional[tp.Sequence[str]]) -> bool:
    """Whether the engines will run on a GPU: TensorRT, or ONNX Runtime whose (explicit or automatic) first
    provider is CUDA/TensorRT."""
    if backend == "tensorrt":
        return True
    if providers:
        return providers[0].lower() in GPU_PROVIDERS
    from .backends.onnxruntime_backend import CPU, resolve_providers

    return resolve_providers(None)[0] != CPU


class JascoPipeline:
    """Exported JASCO graphs + tokenizer + tables, driven by numpy."""

    def __init__(self, manifest: ExportFolder, engines: EngineSet, resolution: Resolution,
                 conditioner: tp.Optional[ConditionProvider] = None):
        self.manifest = manifest
        self.engines = engines
        self.resolution = resolution
        self.conditioner = conditioner or ConditionProvider(manifest)
        self.core = GenerationCore(manifest, engines, self.conditioner)

    @property
    def backend(self) -> str:
        return self.resolution.backend

    @property
    def precision(self) -> str:
        return self.resolution.precision

    @property
    def tokenizer(self):
        return self.conditioner.tokenizer

    @property
    def tables(self) -> tp.Dict[str, np.ndarray]:
        return self.conditioner.tables

    @property
    def chords_mapping(self) -> tp.Mapping[str, int]:
        return self.conditioner.chords_mapping

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, engines_dir: tp.Union[str, os.PathLike, ExportFolder], backend: str = "auto",
                 providers: tp.Optional[tp.Sequence[str]] = None, precision: tp.Optional[str] = None,
                 low_memory: bool = False, conditioner: tp.Optional[ConditionProvider] = None) -> "JascoPipeline":
        """Open an export folder (a path, or an :class:`ExportFolder` already opened).  ``backend``: 'auto'
        (TensorRT engines if built and importable, else ONNX Runtime), 'tensorrt' or 'onnxruntime'; ``precision``:
        'fp32' | 'fp16' | 'int8' (default fp16 where the engines run on a GPU and the export has it, else fp32;
        int8 is the CPU flow step only); ``low_memory``: hold one graph at a time (:class:`EngineSet`), each opened
        when a generation reaches it — the peak is the largest graph, each clip pays the graphs' load time."""
        folder = engines_dir if isinstance(engines_dir, ExportFolder) else ExportFolder.open(engines_dir)
        names = folder.runtime_graphs()
        has_trt = all(folder.has(folder.resolve(n, "tensorrt", "fp16")) for n in names)
        if backend == "auto":  # TensorRT only where its engines exist and tensorrt + polygraphy + a GPU work
            why_not = "no engines built" if not has_trt else tensorrt_unavailable_reason()
            backend = "tensorrt" if why_not is None else "onnxruntime"
            if has_trt and why_not:
                logger.warning("TensorRT engines present but not usable (%s); using ONNX Runtime", why_not)
        if backend not in ("onnxruntime", "tensorrt"):
            raise InputError(f"unknown backend {backend!r}; use auto, onnxruntime or tensorrt")
        if backend == "onnxruntime" and "onnxruntime" not in available_backends():
            raise InputError("onnxruntime is not installed; `pip install onnxruntime` (or onnxruntime-gpu), "
                             "or use --backend tensorrt with engines built on this machine")
        defaulted = precision is None
        if defaulted:
            gpu = _wants_gpu(backend, providers)
            precision = "fp16" if gpu and folder.has(folder.resolve("flow_step", "onnx", "fp16")) else "fp32"
        elif backend == "onnxruntime" and not folder.has(ArtifactKey("flow_step", precision, "onnx")):
            # other graphs follow their declared fp32 fallback (drums kept fp32, int8 is flow-step only); the flow step may not
            have = sorted(a.key.precision for a in folder.artifacts() if a.key.graph == "flow_step" and a.key.backend == "onnx")
            raise InputError(f"{folder.folder} has no {precision} flow_step graph (has: {', '.join(have)}); re-export with "
                             f"`jasco-export --precision fp32,{precision}` or pick another --precision")
        elif backend == "tensorrt" and precision != "fp16":
            raise InputError(f"the TensorRT engines are fp16 (fp32 islands kept by strong typing); --precision "
                             f"{precision} applies to ONNX Runtime — drop it or use --backend onnxruntime")
        engines = cls._open(folder, names, backend, precision, providers, low_memory)
        try:
            flow = engines["flow_step"] if (backend == "onnxruntime" and precision == "fp16") else None
            if defaulted and flow is not None and flow.device == "cpu":
                # CUDA looked available but did not start: the fp32 graphs are the CPU's, as without a GPU
                logger.warning("ONNX Runtime runs on the CPU here; using the fp32 graphs")
                engines.close()
                precision = "fp32"
                engines = cls._open(folder, names, backend, precision, providers, low_memory)
            resolution = cls._resolution(folder, backend, precision, providers, engines)
            return cls(folder, engines, resolution, conditioner)
        except BaseException:
            engines.close()
            raise

    @staticmethod
    def _open(folder: ExportFolder, names: tp.Sequence[str], backend: str, precision: str,
              providers: tp.Optional[tp.Sequence[str]], low_memory: bool) -> EngineSet:
        kind = "tensorrt" if backend == "tensorrt" else "onnx"
        keys = {n: folder.resolve(n, kind, precision) for n in names}
        for key in keys.values() if low_memory else ():  # opened later: a missing file must fail now
            if not folder.path(key).is_file():
                raise InputError(f"graph file {folder.path(key)} is missing; re-run jasco-export or copy the folder again")
        return EngineSet(names, lambda n: open_engine(folder, keys[n], providers), one_at_a_time=low_memory,
                         together=[("flow_step", "solver_step")])

    @staticmethod
    def _resolution(folder: ExportFolder, backend: str, precision: str, providers: tp.Optional[tp.Sequence[str]],
                    engines: EngineSet) -> Resolution:
        """What runs, read from the flow step as it opened (one graph at a time: it is opened here once to read it;
        the precision is that of the flow-step artifact actually opened)."""
        kind = "tensorrt" if backend == "tensorrt" else "onnx"
        ran = folder.resolve("flow_step", kind, precision).precision
        if backend == "tensorrt":
            return Resolution(backend, ran, None, "cuda")
        if engines.one_at_a_time and "flow_step" not in engines.opened:
            from .backends.onnxruntime_backend import CPU, resolve_providers

            wanted = tuple(resolve_providers(providers))
            if wanted[0] == CPU:  # a CPU session runs exactly these: no need to open the graph to know
                return Resolution(backend, ran, wanted, "cpu")
        engine = engines["flow_step"]
        return Resolution(backend, ran, tuple(engine.providers), engine.device)

    def close(self) -> None:
        """Free the engines' device memory now (TensorRT buffers are not garbage-collected)."""
        self.engines.close()

    def __enter__(self) -> "JascoPipeline":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()

    # -- generation -------------------------------------------------------------------------------
    def window_plan(self, duration: float, overlap: tp.Optional[float] = None) -> windows.WindowPlan:
        """How ``duration`` seconds split into windows sharing ``overlap`` seconds (default
        ``windows.DEFAULT_OVERLAP``); the maximum duration is what the export's decoder takes."""
        return windows.plan_for_folder(self.manifest, duration, overlap)

    def prepare(self, req: ResolvedRequest,
                window_descriptions: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None) -> PreparedRequest:
        """Check and prepare every input of a resolved request (CPU only; :mod:`jasco_runtime.conditioning`)."""
        return self.conditioner.prepare(req, window_descriptions)

    def generate(self, descriptions: tp.Sequence[tp.Optional[str]], chords: ChordsInput = None, drums: tp.Any = None,
                 melody: tp.Any = None, cfg_coef_all: tp.Optional[float] = None, cfg_coef_txt: tp.Optional[float] = None,
                 solver: tp.Optional[str] = None, steps: tp.Optional[int] = None, rtol: tp.Optional[float] = None,
                 atol: tp.Optional[float] = None, seed: tp.Optional[int] = None, init_noise: tp.Optional[np.ndarray] = None,
                 progress: bool = True, drums_sample_rate: tp.Optional[int] = None, duration: tp.Optional[float] = None,
                 overlap: tp.Optional[float] = None,
                 window_descriptions: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None,
                 cancel: tp.Optional[Cancel] = None, reference: tp.Any = None,
                 reference_sample_rate: tp.Optional[int] = None,
                 drums_stem: tp.Optional[bool] = None) -> GenerationResult:
        """Generate ``len(descriptions)`` clips.  Defaults (CFG, solver, steps) come from the manifest;
        every setting and input is validated (:class:`GenerationRequest`, :meth:`prepare`) before any engine runs.

        ``duration`` (seconds, default one 10-s window): longer songs are generated window by window,
        each continuing the previous one over ``overlap`` seconds (see :mod:`jasco_runtime.longform`;
        ``window_descriptions``: optionally one list of prompts per window); shorter ones are one window
        trimmed.  ``duration=None`` or one window's length is exactly the single-window generation.

        ``reference`` (a song's path, or [C, T] audio with ``reference_sample_rate``): the chords, melody and drums
        this model takes are extracted from it (:mod:`jasco_runtime.extract`, docs/extract.md) where not given.
        ``drums_stem``: True takes ``drums`` as an already separated stem; by default every drums input is separated
        with the export's htdemucs when it has one, as audiocraft does (docs/drums-separation.md).
        """
        req = GenerationRequest(descriptions, chords=chords, drums=drums, drums_sample_rate=drums_sample_rate,
                                melody=melody, cfg_coef_all=cfg_coef_all, cfg_coef_txt=cfg_coef_txt, solver=solver,
                                steps=steps, rtol=rtol, atol=atol, seed=seed, init_noise=init_noise, duration=duration,
                                overlap=overlap, drums_stem=drums_stem).resolved(self.manifest.defaults)
        if reference is not None:  # conditions from a song; explicit arguments win
            from .extract.reference import for_request

            req = for_request(self.manifest, reference, req, reference_sample_rate)
        return self.run(req, progress=progress, window_descriptions=window_descriptions, cancel=cancel)

    def run(self, req: tp.Union[ResolvedRequest, PreparedRequest], progress: bool = True,
            window_descriptions: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None,
            cancel: tp.Optional[Cancel] = None) -> GenerationResult:
        """Generate from a resolved request (``GenerationRequest.resolved``) or a prepared one (:meth:`prepare`)."""
        prepared = req if isinstance(req, PreparedRequest) else self.prepare(req, window_descriptions)
        if not prepared.single_window:
            return longform.generate_song(self.core, prepared, progress=progress, cancel=cancel)
        return generate_clip(self.core, prepared, progress=progress, cancel=cancel)


def generate_clip(core: GenerationCore, prepared: PreparedRequest, progress: bool = True,
                  cancel: tp.Optional[Cancel] = None) -> GenerationResult:
    """One window: encode the CFG batch, solve with the guided field, decode (a clip shorter than the window is
    that window, trimmed)."""
    timings: tp.Dict[str, float] = {}
    traffic = Traffic()
    total = clock()
    settings = prepared.request.settings
    prepared = core.separate(prepared, timings)
    noise, seed = core.initial_noise(prepared)
    conds = core.encode(prepared.windows[0], prepared.terms, timings)
    with core.progress(progress, settings.expected_nfe, settings.solver) as tick, \
            core.guided_field([Member(conds, prepared.terms, prepared.batch_size)]) as field:
        res = core.solve(settings, field, noise, progress=tick, cancel=cancel, timings=timings, traffic=traffic)
    audio = core.decode(res.z, timings)
    core.check_finite(res.z, audio)
    z, plan = res.z, prepared.plan
    if plan.n_samples < plan.window_samples:  # a clip shorter than one window: that window, trimmed
        audio, z = audio[..., :plan.n_samples], z[:, :plan.n_frames]
    timings["total"] = total()
    return core.result(prepared, audio, z, res.nfe, timings, seed, traffic=traffic)
