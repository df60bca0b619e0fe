"""``JascoPipeline``: JASCO generation from exported graphs with numpy only (no torch).

The pipeline forms the multi-source CFG batch (audiocraft/models/flow_matching.py
``_multi_source_cfg_preprocess``), computes every condition once per generation, drives an ODE solver
whose vector field is one flow-step engine call for all prompts × CFG terms (chunked above the
engine's max batch), and decodes the latents with the EnCodec decoder graph.
"""
from __future__ import annotations

import logging
import os
import time
import typing as tp
from dataclasses import dataclass, field

import numpy as np

from . import audio_io, chords as chords_mod, longform, separation
from .backends import available_backends, open_engine, tensorrt_unavailable_reason
from .engine_set import EngineSet, close_engine
from .errors import InputError, JascoError
from .guidance import CFGTerm, cfg_terms, combine_vector_fields
from .request import ChordsInput, GenerationRequest
from .export_folder import ArtifactKey, ExportFolder
from .solvers import SOLVERS
from .tables import load_tables
from .text import TextTokenizer

logger = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    audio: np.ndarray  # [B, 1, samples] float32
    latents: np.ndarray  # [B, T, D] normalized latents
    sample_rate: int
    nfe: int
    timings: tp.Dict[str, float] = field(default_factory=dict)
    terms: tp.List[CFGTerm] = field(default_factory=list)
    windows: tp.List["longform.WindowResult"] = field(default_factory=list)  # songs > 1 window: each window


@dataclass
class Conditions:
    """Condition tensors of the CFG batch (term-major rows), computed once per generation."""

    text: np.ndarray  # [N, L, dim]
    temporal: tp.Dict[str, np.ndarray]  # graph input name → [N, T, C]


def row_chunks(inputs: tp.Mapping[str, tp.Any], limit: tp.Optional[int]) -> tp.List[tp.Dict[str, tp.Any]]:
    """Split a batch (axis 0 of every input) into consecutive chunks of at most ``limit`` rows, the
    engine profile's max batch (None: one chunk).  The pipeline and the benchmarks chunk alike."""
    n = int(next(iter(inputs.values())).shape[0])
    step = limit or max(n, 1)
    return [{k: v[i:i + step] for k, v in inputs.items()} for i in range(0, max(n, 1), step)]


def _timer() -> tp.Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def _close_all(engines: tp.Any) -> None:
    if isinstance(engines, EngineSet):
        engines.close()
    else:
        for engine in engines.values():
            close_engine(engine)


class JascoPipeline:
    """Exported JASCO graphs + tokenizer + tables, driven by numpy."""

    def __init__(self, manifest: ExportFolder, engines: tp.Union[EngineSet, tp.Dict[str, tp.Any]], backend: str):
        self.manifest = manifest
        self.engines = engines
        self.backend = backend
        self.tokenizer = TextTokenizer(manifest.file("tokenizer"))
        self.tables = load_tables(manifest.file("tables"))
        self.chords_mapping = chords_mod.load_chord_mapping(manifest.file("chords_mapping")) if manifest.has_chords else {}

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, engines_dir: tp.Union[str, os.PathLike], backend: str = "auto",
                 providers: tp.Optional[tp.Sequence[str]] = None, precision: tp.Optional[str] = None,
                 low_memory: bool = False) -> "JascoPipeline":
        """Open an export folder.  ``backend``: 'auto' (TensorRT engines if built and importable, else
        ONNX Runtime), 'tensorrt' or 'onnxruntime'; ``precision``: 'fp32' | 'fp16' | 'int8' (ONNX Runtime; int8 is
        CPU flow-step only); ``low_memory``: hold one graph at a time (:class:`EngineSet`), each opened when a
        generation reaches it — the peak is the largest graph, each clip pays the graphs' load time."""
        folder = ExportFolder.open(engines_dir)
        names = folder.runtime_graphs()
        has_trt = all(folder.has(folder.resolve(n, "tensorrt", "fp16")) for n in names)
        if backend == "auto":  # TensorRT only where its engines exist and tensorrt + polygraphy + a GPU work
            why_not = "no engines built" if not has_trt else tensorrt_unavailable_reason()
            backend = "tensorrt" if why_not is None else "onnxruntime"
            if has_trt and why_not:
                logger.warning("TensorRT engines present but not usable (%s); using ONNX Runtime", why_not)
        if backend == "onnxruntime" and "onnxruntime" not in available_backends():
            raise InputError("onnxruntime is not installed; `pip install onnxruntime` (or onnxruntime-gpu), "
                             "or use --backend tensorrt with engines built on this machine")
        if precision is None:
            gpu = bool(providers) and any(p.lower() in ("cuda", "cudaexecutionprovider") for p in providers)
            precision = "fp16" if gpu and folder.has(folder.resolve("flow_step", "onnx", "fp16")) else "fp32"
        elif backend == "onnxruntime" and not folder.has(ArtifactKey("flow_step", precision, "onnx")):
            # other graphs follow their declared fp32 fallback (drums kept fp32, int8 is flow-step only); the flow step may not
            have = sorted(a.key.precision for a in folder.artifacts() if a.key.graph == "flow_step" and a.key.backend == "onnx")
            raise InputError(f"{folder.folder} has no {precision} flow_step graph (has: {', '.join(have)}); re-export with "
                             f"`jasco-export --precision fp32,{precision}` or pick another --precision")
        kind = "tensorrt" if backend == "tensorrt" else "onnx"
        keys = {n: folder.resolve(n, kind, precision) for n in names}
        for key in keys.values() if low_memory else ():  # opened later: a missing file must fail now
            if not folder.path(key).is_file():
                raise InputError(f"graph file {folder.path(key)} is missing; re-run jasco-export or copy the folder again")
        engines = EngineSet(names, lambda n: open_engine(folder, keys[n], providers), one_at_a_time=low_memory)
        return cls(folder, engines, backend)

    def close(self) -> None:
        """Free the engines' device memory now (TensorRT buffers are not garbage-collected)."""
        _close_all(self.engines)

    def __enter__(self) -> "JascoPipeline":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()

    # -- inputs -----------------------------------------------------------------------------------
    def _progression(self, chords: ChordsInput) -> tp.Optional[chords_mod.Progression]:
        if chords is None or (not isinstance(chords, (str, os.PathLike)) and len(chords) == 0):
            return None
        if isinstance(chords, (str, os.PathLike)):
            chords = chords_mod.parse_chords(chords)
        return list(chords)

    def _frames(self, chords: ChordsInput) -> tp.Optional[np.ndarray]:
        progression = self._progression(chords)
        if progression is None:
            return None
        m = self.manifest
        return chords_mod.frame_chords(progression, self.chords_mapping, m.frame_rate, m.duration)

    def _drums(self, drums: tp.Any, sample_rate: tp.Optional[int], seconds: tp.Optional[float] = None,
               stem: tp.Optional[bool] = None, timings: tp.Optional[tp.Dict[str, float]] = None) -> tp.Optional[np.ndarray]:
        """The drum stem, mono at the model rate, trimmed / zero-padded to ``seconds`` (default: one window),
        separated by the export's htdemucs unless ``stem`` (:func:`separation.separate_prepared`)."""
        if drums is None:
            return None
        if not self.manifest.has_drums:
            raise InputError("this model has no drums conditioner; drop --drums")
        if isinstance(drums, (str, os.PathLike)):
            drums, sample_rate = audio_io.load_audio(drums)
        if sample_rate is None:
            raise InputError("drums given as an array need drums_sample_rate")
        wanted = self.manifest.duration if seconds is None else seconds
        wav = np.asarray(drums, dtype=np.float32)
        if seconds is not None and wav.shape[-1] < seconds * int(sample_rate):
            logger.warning("the drum stem (%.2f s) is shorter than the song (%.2f s); the rest is silent drums "
                           "(zero-padded, as for a 10-s clip); loop the stem yourself to repeat it",
                           wav.shape[-1] / int(sample_rate), seconds)
        wav = audio_io.prepare_drums(wav, int(sample_rate), self.manifest.sample_rate, wanted)
        return separation.separate_prepared(self.manifest, self.engines, wav, stem, timings)

    def _melody(self, melody: tp.Any) -> tp.Optional[np.ndarray]:
        if melody is None:
            return None
        if not self.manifest.has_melody:
            raise InputError("this model has no melody conditioner (melody is only for chords-drums-melody models); drop --melody")
        bins = int(self.manifest.conditioners["melody"]["bins"])
        if isinstance(melody, (str, os.PathLike)):
            return audio_io.load_melody(melody, bins)
        return audio_io.as_salience(melody, bins)

    def _max_batch(self, name: str) -> tp.Optional[int]:
        """Rows per call of engine ``name``: its own profile (TensorRT engines may be built with
        --max-batch), else the manifest's."""
        return getattr(self.engines[name], "max_batch", None) or self.manifest.graphs[name].max_size("batch")

    # -- conditions -------------------------------------------------------------------------------
    def _run_chunked(self, name: str, inputs: tp.Dict[str, np.ndarray], output: str) -> np.ndarray:
        """Call engine ``name`` over row chunks no larger than its profile's max batch."""
        parts = [self.engines[name](**chunk)[output] for chunk in row_chunks(inputs, self._max_batch(name))]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def conditions(self, descriptions: tp.Sequence[tp.Optional[str]], terms: tp.Sequence[CFGTerm],
                   frames: tp.Optional[np.ndarray], drums: tp.Optional[np.ndarray],
                   melody: tp.Optional[np.ndarray], timings: tp.Dict[str, float]) -> Conditions:
        """Rows are term-major: row i·B + b = term i, prompt b (same semantics as the torch reference)."""
        m, T = self.manifest, self.manifest.n_frames
        rows = [(term, d) for term in terms for d in descriptions]
        clock = _timer()
        ids, mask = self.tokenizer([None if term.drops_description else d for term, d in rows])
        timings["tokenize"] = clock()
        clock = _timer()
        limit = m.graphs["text_encoder"].max_size("text_len")
        if limit is not None and ids.shape[1] > limit:
            raise InputError(f"a prompt is {ids.shape[1]} T5 tokens long, the exported engines take at most {limit}; "
                             f"shorten it or re-export with `jasco-export --max-text-tokens {ids.shape[1]}`")
        text = self._run_chunked("text_encoder", {"input_ids": ids, "attention_mask": mask}, "text")
        timings["text_encoder"] = clock()
        temporal: tp.Dict[str, np.ndarray] = {}
        chords_given = frames is not None
        if m.has_chords:
            table = self.tables["chords_emb"]
            null = table[int(m.conditioners["chords"]["null_index"])]
            given = table[frames] if chords_given else None
            temporal["chords"] = np.stack([null[None].repeat(T, 0) if (given is None or term.drops_chords) else given
                                           for term, _ in rows]).astype(np.float32)
        if m.has_drums:
            bias = self.tables["drums_null"]
            keeps = drums is not None and any(not term.drops_drums for term in terms)
            clock = _timer()
            encoded = self._run_chunked("drums_encoder", {"wav": drums[None, None]}, "drums")[0] if keeps else None
            timings["drums_encoder"] = clock()
            # dropped drums: a zero wav padded to the batch's longest → EnCodec "silence codes"; when no
            # row keeps drums the wav stays 1 sample long → zero latents → projection bias (BEHAVIOUR §4)
            dropped = self.tables["drums_silence"] if keeps else np.broadcast_to(bias, (T, bias.shape[-1]))
            temporal["drums"] = np.stack([encoded if (keeps and not term.drops_drums) else dropped
                                          for term, _ in rows]).astype(np.float32)
        if m.has_melody:
            w, b = self.tables["melody_weight"], self.tables["melody_bias"]
            bins = w.shape[1]
            mel = melody if melody is not None else np.zeros((bins, T), np.float32)

            def project(x: np.ndarray) -> np.ndarray:  # [bins, Tm] → [T, C], zero-padded after projection
                y = (x.T.astype(np.float32) @ w.T + b)[:T]
                return np.concatenate([y, np.zeros((T - y.shape[0], y.shape[1]), np.float32)]) if y.shape[0] < T else y

            kept, dropped_m = project(mel), project(np.zeros_like(mel))
            temporal["melody"] = np.stack([dropped_m if term.drops_melody(chords_given) else kept
                                           for term, _ in rows]).astype(np.float32)
        return Conditions(text.astype(np.float32), temporal)

    # -- generation -------------------------------------------------------------------------------
    def vector_field(self, conditions: Conditions, terms: tp.Sequence[CFGTerm]) -> tp.Callable[[float, np.ndarray], np.ndarray]:
        """v(t, z) for the solvers: one flow-step call over all rows, then the CFG combination."""
        n = len(terms)
        engine = self.engines["flow_step"]
        limit = self._max_batch("flow_step")
        rows = conditions.text.shape[0]
        bound = None
        if getattr(engine, "on_gpu", False) and (limit is None or rows <= limit):
            # IOBinding: the conditions go to the device once and stay there for the whole ODE solve;
            # only z (rows × T × 128 floats) and v cross host memory at each evaluation.
            bound = {"text": engine.to_device(conditions.text),
                     **{k: engine.to_device(v) for k, v in conditions.temporal.items()}}

        def field(t: float, z: np.ndarray) -> np.ndarray:
            zz = np.concatenate([z] * n, axis=0) if n > 1 else z
            tt = np.full((zz.shape[0],), t, dtype=np.float32)
            if bound is not None:
                v = engine.run_bound({"z": zz, "t": tt, **bound})["v"].numpy()
            else:
                v = self._run_chunked("flow_step", {"z": zz, "t": tt, "text": conditions.text, **conditions.temporal}, "v")
            return combine_vector_fields(v, list(terms))

        def release() -> None:  # the generation's device copies of the conditions
            for buf in (bound or {}).values():
                getattr(buf, "free", lambda: None)()

        field.release = release  # type: ignore[attr-defined]
        return field

    def window_plan(self, duration: float, overlap: tp.Optional[float] = None) -> longform.WindowPlan:
        """How ``duration`` seconds split into windows sharing ``overlap`` seconds (default
        ``longform.DEFAULT_OVERLAP``); the maximum duration is what the export's decoder takes."""
        return longform.plan_for_folder(self.manifest, duration, overlap)

    def generate(self, descriptions: tp.Sequence[tp.Optional[str]], chords: ChordsInput = None, drums: tp.Any = None,
                 melody: tp.Any = None, cfg_coef_all: tp.Optional[float] = None, cfg_coef_txt: tp.Optional[float] = None,
                 solver: tp.Optional[str] = None, steps: tp.Optional[int] = None, rtol: tp.Optional[float] = None,
                 atol: tp.Optional[float] = None, seed: tp.Optional[int] = None, init_noise: tp.Optional[np.ndarray] = None,
                 progress: bool = True, drums_sample_rate: tp.Optional[int] = None, duration: tp.Optional[float] = None,
                 overlap: tp.Optional[float] = None, drums_stem: tp.Optional[bool] = None,
                 window_descriptions: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None) -> GenerationResult:
        """Generate ``len(descriptions)`` clips.  Defaults (CFG, solver, steps) come from the manifest;
        every setting is validated (:class:`GenerationRequest`) before any engine runs.

        ``duration`` (seconds, default one 10-s window): longer songs are generated window by window,
        each continuing the previous one over ``overlap`` seconds (see :mod:`jasco_runtime.longform`;
        ``window_descriptions``: optionally one list of prompts per window); shorter ones are one window
        trimmed.  ``duration=None`` or one window's length is exactly the single-window generation.
        """
        req = GenerationRequest(descriptions, chords=chords, drums=drums, drums_sample_rate=drums_sample_rate,
                                melody=melody, cfg_coef_all=cfg_coef_all, cfg_coef_txt=cfg_coef_txt, solver=solver,
                                steps=steps, rtol=rtol, atol=atol, seed=seed, init_noise=init_noise, duration=duration,
                                overlap=overlap, drums_stem=drums_stem).resolved(self.manifest.defaults)
        return self.run(req, progress=progress, window_descriptions=window_descriptions)

    def run(self, req: GenerationRequest, progress: bool = True,
            window_descriptions: tp.Optional[tp.Sequence[tp.Sequence[tp.Optional[str]]]] = None) -> GenerationResult:
        """Generate from a validated request (``GenerationRequest.resolved``)."""
        descriptions, solver = req.prompts, req.solver
        plan = None
        if req.duration is not None or window_descriptions is not None:
            plan = self.window_plan(self.manifest.duration if req.duration is None else req.duration, req.overlap)
            if plan.n_windows > 1:
                return longform.generate_song(self, plan, req, progress=progress, window_descriptions=window_descriptions)
            if window_descriptions is not None:
                descriptions = longform.window_descriptions_for(plan, descriptions, window_descriptions)[0]
        timings: tp.Dict[str, float] = {}
        total = _timer()
        terms = cfg_terms(req.cfg_coef_all, req.cfg_coef_txt)
        frames = self._frames(req.chords)
        drums_wav = self._drums(req.drums, req.drums_sample_rate, stem=req.drums_stem, timings=timings)
        mel = self._melody(req.melody)
        B, T, D = len(descriptions), self.manifest.n_frames, self.manifest.latent_dim
        init_noise = req.init_noise
        if init_noise is not None and init_noise.shape != (B, T, D):
            raise InputError(f"init noise must be [{B}, {T}, {D}] for {B} prompt(s), got {list(init_noise.shape)}")
        conds = self.conditions(descriptions, terms, frames, drums_wav, mel, timings)
        if init_noise is None:
            init_noise = np.random.default_rng(req.seed).standard_normal((B, T, D)).astype(np.float32)
        field_fn = self.vector_field(conds, terms)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=req.steps if solver != "dopri5" else None, unit="nfe", desc=f"{solver}")

        def callback(nfe: int, estimate: int) -> None:
            if bar is not None:
                bar.update(1)

        clock = _timer()
        try:
            if solver == "dopri5":
                res = SOLVERS["dopri5"](field_fn, init_noise, rtol=req.rtol, atol=req.atol, callback=callback)
            else:
                res = SOLVERS[solver](field_fn, init_noise, req.steps, callback=callback)
        finally:
            field_fn.release()  # type: ignore[attr-defined]
            if bar is not None:
                bar.close()
        timings["flow"] = clock()
        timings["flow_per_eval"] = timings["flow"] / max(res.nfe, 1)
        clock = _timer()
        audio = self._run_chunked("encodec_decoder", {"latents": res.z.astype(np.float32)}, "audio")
        timings["decoder"] = clock()
        for what, x in (("latents", res.z), ("audio", audio)):
            if not np.isfinite(x).all():
                raise JascoError(f"the generation produced non-finite {what} (NaN/Inf); nothing was written — check the "
                                 f"artifacts with `jasco-run verify {self.manifest.folder}`")
        timings["total"] = total()
        if plan is not None and plan.n_frames < T:  # a clip shorter than one window: that window, trimmed
            audio, res.z = audio[..., :plan.n_samples], res.z[:, :plan.n_frames]
        return GenerationResult(audio=audio, latents=res.z, sample_rate=self.manifest.sample_rate, nfe=res.nfe,
                                timings=timings, terms=list(terms))
