"""``python -m benchmarks.long_songs``: cost and seams of windowed long-form generation (issue 11).

    python -m benchmarks.long_songs --model tiny --durations 10,30,60 --out benchmarks/results/long-songs

* **Cost**: per requested duration, windows, vector-field evaluations (NFE), process CPU time (all
  threads; what a shared machine's load disturbs least) and wall time (median of ``--repeats``; flow,
  decoder, total) and their ratios to one 10-s window.
* **Seams**: a 30-s song stitched four ways — continuation constraint on/off × overlap from the
  earlier window / equal-power blend — scored at each seam by the latent-difference jump and the
  spectral flux over their medians inside the windows (1 ≈ as smooth as inside a window). Measured
  with the exported model (random weights here: its latents have no temporal structure, so every
  ratio is ≈ 1 and says nothing about continuation), and with :class:`GaussianFlow`, the exact flow
  of a temporally smooth Gaussian data distribution standing in for a trained model, which has
  temporal structure for the constraint to continue.

Writes ``results.json`` and ``results.md`` (also printed) into ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import DEFAULT_CACHE, resolve_model

CHORDS = [("C", 0.0), ("Am", 2.5), ("F", 5.0), ("G", 7.5)]
"""A 10-s progression, repeated over the song by :func:`song_chords`."""
VARIANTS = [(True, "earlier"), (True, "blend"), (False, "earlier"), (False, "blend")]


# -- a model with temporal structure ---------------------------------------------------------------
@dataclass
class GaussianFlow:
    """Exact flow-matching vector field of data x₁ ~ N(0, Σ) over the frames (latent channels
    independent), Σ = squared-exponential kernel of ``length`` frames + ``nugget``·I.

    On audiocraft's path z_t = a·z₀ + t·x₁ (a = 1 − (1 − σ_min)·t) the marginal field is
    E[x₁ − (1 − σ_min)·z₀ | z_t = z] = (tΣ − (1 − σ_min)·a·I)(a²I + t²Σ)⁻¹ z, diagonal in Σ's eigenbasis.
    """

    frames: int
    length: float = 10.0
    nugget: float = 1e-3
    sigma_min: float = 1e-5

    def __post_init__(self) -> None:
        i = np.arange(self.frames, dtype=np.float64)
        cov = np.exp(-0.5 * ((i[:, None] - i[None, :]) / self.length) ** 2) + self.nugget * np.eye(self.frames)
        self.eigenvalues, self.basis = np.linalg.eigh(cov)
        self.nfe = 0

    def __call__(self, t: float, z: np.ndarray) -> np.ndarray:
        self.nfe += 1
        t = float(t)
        a = 1 - (1 - self.sigma_min) * t
        lam = self.eigenvalues
        gain = (t * lam - (1 - self.sigma_min) * a) / (a * a + t * t * lam)
        coords = np.einsum("ft,btd->bfd", self.basis.T, z.astype(np.float64))
        return np.einsum("tf,bfd->btd", self.basis, gain[None, :, None] * coords).astype(np.float32)


@contextlib.contextmanager
def vector_field_replaced(pipe: tp.Any, field: tp.Callable[[float, np.ndarray], np.ndarray]):
    """Run ``pipe`` with ``field`` as its guided vector field (conditions are still computed, then ignored)."""
    pipe.core.guided_field = lambda members: contextlib.nullcontext(field)
    try:
        yield pipe
    finally:
        del pipe.core.guided_field


# -- seam metrics ------------------------------------------------------------------------------------
def latent_jumps(latents: np.ndarray) -> np.ndarray:
    """‖z[f] − z[f−1]‖ over the latent dim, mean over the batch: [N − 1] (entry f−1 steps into frame f)."""
    return np.linalg.norm(np.diff(latents.astype(np.float64), axis=1), axis=-1).mean(axis=0)


def spectral_flux(audio: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """Positive spectral flux Σ_k max(0, |X_m,k| − |X_m−1,k|) (Hann STFT, mean over leading axes):
    [M − 1], entry m−1 steps into the STFT frame starting at sample m·hop."""
    x = np.asarray(audio, np.float64).reshape(-1, audio.shape[-1])
    n = (x.shape[-1] - n_fft) // hop + 1
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    mag = np.abs(np.fft.rfft(x[:, idx] * np.hanning(n_fft), axis=-1))
    return np.maximum(np.diff(mag, axis=1), 0).sum(-1).mean(0)


def seam_metrics(latents: np.ndarray, audio: tp.Optional[np.ndarray], plan: tp.Any, guard: int = 2,
                 n_fft: int = 2048, hop: int = 512) -> tp.Dict[str, tp.Any]:
    """Per seam (a window's first new frame): the latent jump into it over the median jump away from
    seams (±``guard`` frames), the largest jump across the window's overlap (where a blend
    spreads the seam) over that median, the latents' RMS over the overlap over their RMS outside
    the overlaps (a blend of equal frames raises it), and with ``audio`` the largest spectral flux
    into an STFT frame containing the seam over the median flux elsewhere."""
    jumps = latent_jumps(latents)
    inside = np.ones(jumps.shape[0], bool)
    for s in plan.seams:
        inside[max(0, s - 1 - guard):s + guard] = False
    med = float(np.median(jumps[inside]))
    out: tp.Dict[str, tp.Any] = {
        "seams_s": [round(s / plan.frame_rate, 3) for s in plan.seams],
        "latent_jump": [float(jumps[s - 1] / med) for s in plan.seams],
        "latent_jump_overlap_max": [float(jumps[max(0, w.start - 1):w.start + w.known].max() / med)
                                    for w in plan.windows[1:]]}
    rms = np.sqrt(np.mean(latents.astype(np.float64) ** 2, axis=(0, 2)))  # per frame
    alone = np.ones(rms.shape[0], bool)
    for w in plan.windows[1:]:
        alone[w.start:w.start + w.known] = False
    out["overlap_rms"] = [float(np.sqrt(np.mean(rms[w.start:w.start + w.known] ** 2) / np.mean(rms[alone] ** 2)))
                          for w in plan.windows[1:]]
    if audio is not None:
        flux = spectral_flux(audio, n_fft, hop)
        spans = []
        for s in plan.seams:
            x = s * plan.samples_per_frame
            first, last = max(1, -(-(x - n_fft + 1) // hop)), x // hop
            spans.append(np.arange(first - 1, min(last, flux.shape[0])))
        mask = np.ones(flux.shape[0], bool)
        for r in spans:
            mask[r] = False
        fmed = float(np.median(flux[mask]))
        out["spectral_flux"] = [float(flux[r].max() / fmed) for r in spans]
    return out


def song_chords(seconds: float) -> tp.List[tp.Tuple[str, float]]:
    return [(c, t + 10.0 * k) for k in range(int(np.ceil(seconds / 10.0))) for c, t in CHORDS if t + 10.0 * k < seconds]


# -- runs ------------------------------------------------------------------------------------------------
def cost(pipe: tp.Any, durations: tp.Sequence[float], args: argparse.Namespace, drums: np.ndarray, sr: int
         ) -> tp.List[tp.Dict[str, tp.Any]]:
    rows = []
    for seconds in durations:
        runs = []
        for r in range(args.warmup + args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            res = pipe.generate(["funky groove"], chords=song_chords(seconds), drums=drums, drums_sample_rate=sr,
                                cfg_coef_all=1.25, cfg_coef_txt=2.5, solver=args.solver,
                                steps=None if args.solver == "dopri5" else args.steps, seed=r, duration=seconds,
                                overlap=args.overlap, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r >= args.warmup:
                runs.append((wall, res, cpu))
        med = statistics.median(w for w, _, _ in runs)
        res = runs[0][1]
        rows.append({"duration_s": seconds, "windows": max(1, len(res.windows)), "nfe": res.nfe,
                     "wall_s": med, "walls_s": [w for w, _, _ in runs],
                     "cpu_s": statistics.median(c for _, _, c in runs),
                     "flow_s": statistics.median(r.timings["flow"] for _, r, _ in runs),
                     "decoder_s": statistics.median(r.timings["decoder"] for _, r, _ in runs),
                     "samples": int(res.audio.shape[-1]), "rtf": med / seconds})
        rows[-1]["flow_per_nfe_s"] = rows[-1]["flow_s"] / res.nfe
    base = rows[0]
    for row in rows:
        row["nfe_ratio"] = row["nfe"] / base["nfe"]
        row["wall_ratio"] = row["wall_s"] / base["wall_s"]
        row["cpu_ratio"] = row["cpu_s"] / base["cpu_s"]
    return rows


def seams(pipe: tp.Any, seconds: float, args: argparse.Namespace, drums: np.ndarray, sr: int,
          field: tp.Optional[GaussianFlow] = None) -> tp.Dict[str, tp.Any]:
    from jasco_runtime.longform import generate_song
    from jasco_runtime.request import GenerationRequest

    plan = pipe.window_plan(seconds, args.overlap)
    req = GenerationRequest(["funky groove"], chords=song_chords(seconds), drums=drums, drums_sample_rate=sr,
                            cfg_coef_all=1.25, cfg_coef_txt=2.5, solver=args.solver,
                            steps=None if args.solver == "dopri5" else args.steps, seed=0, duration=seconds,
                            overlap=args.overlap).resolved(pipe.manifest.defaults)
    prepared = pipe.prepare(req)
    out = {}
    for continuation, stitch in VARIANTS:
        with contextlib.ExitStack() as stack:
            if field is not None:
                stack.enter_context(vector_field_replaced(pipe, field))
            res = generate_song(pipe.core, prepared, progress=False, continuation=continuation, stitch_mode=stitch)
        name = f"{'constraint' if continuation else 'independent'}+{stitch}"
        out[name] = seam_metrics(res.latents, res.audio, plan)
    return out


def decoder_cost(frames: tp.Sequence[int], repeats: int) -> tp.List[tp.Dict[str, tp.Any]]:
    """The release-size EnCodec decoder (``facebook/encodec_32khz`` architecture, random weights) exported
    with the dynamic frame axis, timed in ONNX Runtime CPU at each length; peak RSS of this process after
    each length (monotonic, lengths in increasing order)."""
    import resource
    import tempfile

    import onnxruntime as ort
    import torch
    from transformers import EncodecConfig, EncodecModel

    from jasco_export.graphs import onnx_export
    from jasco_export.graphs.spec import EncodecDecoder, GraphSpec, ProfileRange, TensorSpec
    from jasco_export.reference.loading import KNOWN_COMPRESSION_CONFIGS

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig.from_json_file(str(KNOWN_COMPRESSION_CONFIGS["facebook/encodec_32khz"]))).eval()
    spec = GraphSpec("encodec_decoder", EncodecDecoder(model.decoder, -0.0074, 4.0102),
                     [TensorSpec("latents", "float32", ("batch", "frames", 128))],
                     [TensorSpec("audio", "float32", ("batch", 1, "samples"))],
                     {"batch": ProfileRange(1, 1, 3), "frames": ProfileRange(500, 500, max(frames))})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_export.export_graph(spec, Path(tmp) / "encodec_decoder.fp32.onnx")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for n in sorted(frames):
            x = np.random.default_rng(n).standard_normal((1, n, 128)).astype(np.float32)
            sess.run(None, {"latents": x})
            walls, cpus = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                sess.run(None, {"latents": x})
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            rows.append({"frames": n, "seconds": n / 50, "wall_s": statistics.median(walls),
                         "cpu_s": statistics.median(cpus),
                         "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return rows


def to_markdown(results: tp.Dict[str, tp.Any]) -> str:
    cfg = results["config"]
    lines = [f"# Long songs — {cfg['model']}, {cfg['solver']} {cfg['steps']} steps, overlap {cfg['overlap']} s",
             "", f"{results['machine']['platform']}, {results['machine']['cpus']} CPUs (load average "
                 f"{results['machine']['loadavg_start'][0]:.1f} at the start), {results['created']}; `{results['command']}`", "",
             "| duration | windows | NFE | NFE ratio | CPU time | CPU ratio | wall (median) | wall ratio | flow | flow / NFE "
             "| decoder | RTF |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["cost"]:
        lines.append(f"| {r['duration_s']:g} s | {r['windows']} | {r['nfe']} | {r['nfe_ratio']:.1f}× | {r['cpu_s']:.2f} s | "
                     f"{r['cpu_ratio']:.2f}× | {r['wall_s']:.2f} s | "
                     f"{r['wall_ratio']:.2f}× | {r['flow_s']:.2f} s | {r['flow_per_nfe_s'] * 1e3:.1f} ms | {r['decoder_s']:.2f} s | "
                     f"{r['rtf']:.3f} |")
    if results.get("decoder_encodec_32khz"):
        lines += ["", "Release-size EnCodec decoder (encodec_32khz architecture, random weights), ONNX Runtime CPU, "
                      "one call per song:", "", "| song | frames | CPU time | wall | peak RSS of the process |",
                  "|---|---|---|---|---|"]
        for r in results["decoder_encodec_32khz"]:
            lines.append(f"| {r['seconds']:g} s | {r['frames']} | {r['cpu_s']:.2f} s | {r['wall_s']:.2f} s | "
                         f"{r['peak_rss_mib']:.0f} MiB |")
    for title, key in (("exported model (random weights)", "seams_model"),
                       ("GaussianFlow (smooth data, exact field)", "seams_gaussian")):
        table = results.get(key)
        if not table:
            continue
        seams_s = next(iter(table.values()))["seams_s"]
        lines += ["", f"Seams of a {cfg['seam_duration']:g}-s song, {title}: ratio to the median inside the windows "
                      f"at seams {', '.join(f'{s:g} s' for s in seams_s)} (mean over seams)", "",
                  "| variant | latent jump | max jump over the overlap | overlap RMS | spectral flux |",
                  "|---|---|---|---|---|"]
        for name, m in table.items():
            def f(v: tp.Sequence[float]) -> str:
                return f"{np.mean(v):.2f} ({', '.join(f'{x:.2f}' for x in v)})"
            lines.append(f"| {name} | {f(m['latent_jump'])} | {f(m['latent_jump_overlap_max'])} | {f(m['overlap_rms'])} | "
                         f"{f(m['spectral_flux'])} |")
    return "\n".join(lines) + "\n"


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.long_songs", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny | 400m-random | 1b-random | hub id | checkpoint folder")
    p.add_argument("--durations", default="10,30,60", help="comma list of seconds (the first is the baseline)")
    p.add_argument("--seam-duration", type=float, default=30.0)
    p.add_argument("--no-seams", action="store_true", help="cost only (the seam study runs 8 songs)")
    p.add_argument("--release-decoder", action="store_true",
                   help="also time the encodec_32khz-sized decoder graph at 10/30/60 s (random weights)")
    p.add_argument("--overlap", type=float, default=None, help="seconds (default: the runtime's)")
    p.add_argument("--solver", default="euler", choices=["euler", "midpoint", "heun", "dopri5"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/long-songs"))
    args = p.parse_args(argv)
    model = resolve_model(args.model, args.cache)
    from jasco_export.parity.golden import synthetic_drums
    from jasco_runtime import JascoPipeline
    from jasco_runtime.errors import JascoError
    from jasco_runtime.export_folder import ExportFolder
    from jasco_runtime.longform import DEFAULT_OVERLAP

    from .models import ensure_export

    graphs = ["text_encoder", "drums_encoder", "flow_step", "solver_step", "encodec_decoder"]
    folder = ensure_export(model, graphs, [args.precision], args.cache)
    try:
        current = "frames" in ExportFolder.open(folder).graphs["encodec_decoder"].profile
    except JascoError:  # an older manifest schema
        current = False
    if not current:  # exported before long songs (decoder of one window) or by an older exporter
        folder = ensure_export(model, graphs, [args.precision], args.cache, fresh=True)
    pipe = JascoPipeline.from_dir(folder, backend="onnxruntime", providers=["cpu"], precision=args.precision)
    durations = [float(x) for x in args.durations.split(",")]
    args.overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    sr = pipe.manifest.sample_rate
    drums = synthetic_drums(max(durations + [args.seam_duration]), sr)
    t0 = time.perf_counter()
    results = {
        "schema": "jasco-trt-long-songs/1",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.long_songs " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": list(os.getloadavg())},
        "config": {"model": args.model, "solver": args.solver, "steps": args.steps, "overlap": args.overlap,
                   "precision": args.precision, "repeats": args.repeats, "seam_duration": args.seam_duration,
                   "cfg": [1.25, 2.5]},
        "cost": cost(pipe, durations, args, drums, sr),
    }
    if args.release_decoder:
        results["decoder_encodec_32khz"] = decoder_cost([int(d * 50) for d in durations], args.repeats)
    if not args.no_seams:
        results["seams_model"] = seams(pipe, args.seam_duration, args, drums, sr)
        results["seams_gaussian"] = seams(pipe, args.seam_duration, args, drums, sr, GaussianFlow(pipe.manifest.n_frames))
    results["elapsed_s"] = time.perf_counter() - t0
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    md = to_markdown(results)
    (args.out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
