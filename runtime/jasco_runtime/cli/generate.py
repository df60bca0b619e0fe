"""``jasco-run [generate]``: generate music clips (or long songs) from an export folder.

    jasco-run --engines engines/jasco-chords-drums-400M --text "funky groove" \
              --chords "C:0 F:4 G:6" --drums drums.wav --out out.wav

Every argument and input file is checked before the engines load (:func:`check_inputs`); the generation
itself is one call into the runtime (:func:`generate`).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import typing as tp
from pathlib import Path

import numpy as np

from ..errors import InputError, JascoError, first_line
from ..export_folder import ExportFolder
from ..files import atomic_write_all
from ..export_folder import Backend, Precision
from ..request import GenerationRequest
from ..solvers import SOLVERS
from .. import signals
from ..signals import signals_held
from . import logs
from .command import Command, late_signal_note
from .paths import input_file, input_folder, output_file

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", required=True, type=Path, help="folder written by jasco-export (holds manifest.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="text prompt (repeat for several clips)")
    src.add_argument("--prompts", type=Path, help="file with one prompt per line (UTF-8)")
    p.add_argument("--chords", help='"C:0 F:4 G:6", "(C, 0.0), (D, 2.0)", a .lab or a .json file')
    p.add_argument("--drums", type=Path, help="drums audio: a drum track or any recording (any rate/channels; separated "
                   "by the export's htdemucs when it has one, see --drums-stem)")
    stem = p.add_mutually_exclusive_group()
    stem.add_argument("--drums-stem", dest="drums_stem", action="store_const", const=True,
                      help="--drums is already a drum stem: skip the export's htdemucs separation (by default every "
                           "drums input is separated when the export has a separator, as audiocraft does)")
    stem.add_argument("--separate-drums", dest="drums_stem", action="store_const", const=False,
                      help="require separation of --drums (error if the export has no separator)")
    p.add_argument("--reference", type=Path, help="a song: chords, melody and drums extracted from it (the 'extract' "
                                                  "extra; --chords/--melody/--drums override each), see docs/extract.md")
    p.add_argument("--melody", type=Path, help="melody salience .npy, [53, T] or [T, 53] at 50 Hz (T ≥ 1, T ≠ 53)")
    p.add_argument("--cfg-all", type=float, help="CFG weight of the all-conditions term (default: manifest)")
    p.add_argument("--cfg-txt", type=float, help="CFG weight of the text-only term (default: manifest)")
    p.add_argument("--solver", choices=list(SOLVERS))
    p.add_argument("--steps", type=int, help="fixed-step solvers: number of steps (default: manifest)")
    p.add_argument("--duration", type=float, help="song length in seconds, at least one latent frame (default: one "
                                                  "10-s window; longer songs are generated window by window, see "
                                                  "README 'Longer songs')")
    p.add_argument("--overlap", type=float, help="seconds shared by consecutive windows of a long song (default 2.5; "
                                                 "needs --duration)")
    p.add_argument("--rtol", type=float, help="dopri5 only: relative tolerance > 0 (default: manifest)")
    p.add_argument("--atol", type=float, help="dopri5 only: absolute tolerance > 0 (default: manifest)")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, help="seed of the initial noise (default: drawn, and reported)")
    seed.add_argument("--init-noise", type=Path, help=".npy [B, T, 128] initial noise for exact replay")
    p.add_argument("--backend", default="auto", choices=Backend.choices("auto"))
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime execution provider")
    p.add_argument("--precision", choices=Precision.choices(),
                   help="ONNX graph precision (default fp32 on CPU, fp16 on CUDA; int8: CPU flow step, if exported)")
    p.add_argument("--low-memory", action="store_true",
                   help="hold one graph at a time (peak = the largest graph, for 8-16 GB boards); each graph is "
                        "loaded when the generation reaches it (per window for long songs)")
    p.add_argument("--out", required=True, type=Path, help="OUT.wav; with several prompts OUT_0.wav, OUT_1.wav, ...")
    p.add_argument("--format", default="float", choices=["float", "pcm16"], help="wav sample format")
    p.add_argument("--normalize", choices=["peak", "loudness"], help="normalise each clip")
    p.add_argument("--save-latents", type=Path, help="save the generated latents [B, T, 128] to .npy")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a "
                                                              "terminal)")


# -- checks before the engines load ---------------------------------------------------------------------------
def _prompts(a: argparse.Namespace) -> tp.List[str]:
    if a.text:
        return list(a.text)
    input_file(a.prompts, "prompts file", "give one prompt per line")
    try:  # utf-8-sig: a byte-order mark written by some editors is not part of the first prompt (Z12)
        lines = [ln.strip() for ln in a.prompts.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise InputError(f"prompts file {a.prompts} is not UTF-8 text (a binary file?); give one prompt per line") from exc
    except OSError as exc:
        raise InputError(f"cannot read prompts file {a.prompts} ({exc.strerror}); give one prompt per line") from exc
    prompts = [ln for ln in lines if ln]
    if not prompts:
        raise InputError(f"prompts file {a.prompts} is empty; give one prompt per line")
    return prompts


def _out_paths(out: Path, n: int) -> tp.List[Path]:
    output_file(out, "--out", ".wav")
    paths = [out] if n == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]
    return [output_file(p, "--out", ".wav") for p in paths]


def check_duration(a: argparse.Namespace, folder: ExportFolder) -> None:
    """With loudness normalisation at least one BS.1770 block (D12, D14); the duration/overlap rule itself (one
    latent frame at least, overlap only with a duration: D10, D11, O09) is the window plan's, checked by
    ``resolved``/``prepare`` before the engines load."""
    from ..audio_io import LOUDNESS_MIN_SECONDS

    if a.normalize == "loudness" and a.duration is not None and np.isfinite(a.duration) \
            and 1 / folder.frame_rate <= a.duration < LOUDNESS_MIN_SECONDS:
        raise InputError(f"--normalize loudness needs at least {LOUDNESS_MIN_SECONDS:g} s of audio (one ITU-R BS.1770 "
                         f"block), got --duration {a.duration:g} s; use --normalize peak or a longer --duration")


def _inputs(a: argparse.Namespace, folder: ExportFolder) -> tp.Dict[str, tp.Any]:
    """Every input file named and checked before any engine is loaded (read by ``prepare``)."""
    from .. import chords

    inputs: tp.Dict[str, tp.Any] = {}
    if a.chords is not None:
        inputs["chords"] = chords.parse_chords(a.chords)
    if a.drums is not None:  # the conditioner's presence and the contents: ConditionProvider.prepare
        input_file(a.drums, "drums file")
        inputs["drums"] = a.drums  # read by prepare, only as far as the song needs
    if a.drums_stem is not None:
        flag = "--drums-stem" if a.drums_stem else "--separate-drums"
        if a.drums is None:
            raise InputError(f"{flag} says how to treat --drums; give --drums or drop {flag}")
        inputs["drums_stem"] = a.drums_stem  # checked against the export's separator by prepare
    if a.melody is not None:
        input_file(a.melody, "melody file")
        inputs["melody"] = a.melody
    if a.init_noise is not None:
        input_file(a.init_noise, "--init-noise")
        try:
            inputs["init_noise"] = np.load(a.init_noise, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"cannot read --init-noise {a.init_noise} ({first_line(exc)}); expected a .npy array "
                             "[prompts, frames, 128]") from exc
    return inputs


# -- outputs --------------------------------------------------------------------------------------------------
def _encode(clip: np.ndarray, sample_rate: int, a: argparse.Namespace, path: Path) -> bytes:
    """Normalise, warn when pcm16 clips samples (NB-pcm16-none), encode in memory."""
    from .. import audio_io

    clip = audio_io.normalize_clip(np.asarray(clip, dtype=np.float32), sample_rate, a.normalize)
    if a.format == "pcm16" and clip.size:
        clipped = float(np.mean(np.abs(clip) > 1.0))
        if clipped > 0:
            logger.warning("%s: %.1f %% of the samples exceed ±1 and are clipped by --format pcm16; add --normalize "
                           "peak (or loudness) or use --format float", path, 100 * clipped)
    return audio_io.encode_wav(clip, sample_rate, subtype="PCM_16" if a.format == "pcm16" else "FLOAT")


def _write_outputs(files: tp.Sequence[tp.Tuple[Path, bytes]]) -> tp.Optional[str]:
    """All outputs or none (temp files, then renames); a disk error is one line."""
    try:
        return atomic_write_all(files)
    except OSError as exc:
        folders = sorted({str(p.parent) for p, _ in files})
        raise JascoError(f"cannot write the outputs to {', '.join(folders)} ({exc.strerror or exc}); nothing was "
                         "written — free disk space or choose another --out") from exc


def generate(a: argparse.Namespace) -> int:
    """Validate every argument and read every input, then load the engines, generate and write all outputs."""
    from .. import audio_io
    from ..conditioning import ConditionProvider
    from ..pipeline import JascoPipeline

    prompts = _prompts(a)
    outs = _out_paths(a.out, len(prompts))
    latents_path = None if a.save_latents is None else output_file(a.save_latents, "--save-latents", ".npy")
    audio_io.check_normalization(a.normalize)
    input_folder(a.engines, "--engines", "give the folder jasco-export wrote")
    folder = ExportFolder.open(a.engines)
    check_duration(a, folder)
    req = GenerationRequest(prompts, cfg_coef_all=a.cfg_all, cfg_coef_txt=a.cfg_txt, solver=a.solver, steps=a.steps,
                            rtol=a.rtol, atol=a.atol, seed=a.seed, duration=a.duration, overlap=a.overlap,
                            **_inputs(a, folder)).resolved(folder.defaults)
    if a.reference is not None:  # conditions from a song (jasco_runtime.extract); explicit options win
        from ..extract.reference import for_request

        input_file(a.reference, "--reference")
        req = for_request(folder, a.reference, req)
    conditioner = ConditionProvider(folder)
    prepared = conditioner.prepare(req)  # every input checked (and read) before an engine loads
    pipe = JascoPipeline.from_dir(folder, backend=a.backend, providers=[a.provider] if a.provider else None,
                                  precision=a.precision, low_memory=a.low_memory, conditioner=conditioner)
    try:
        signals.check()  # a signal swallowed while the backend was imported or its sessions opened
        r = pipe.resolution
        logger.info("engines of %s ready (%s %s on %s); generating %d clip(s)", a.engines, r.backend, r.precision,
                    r.device, len(prompts))
        res = pipe.run(prepared, progress=logs.show_progress_bars(a.no_progress))
    finally:
        pipe.close()
    seed = res.seed  # drawn by the solve owner when none was given, reported (J01/J02)
    files = [(path, _encode(clip, res.sample_rate, a, path)) for path, clip in zip(outs, res.audio)]
    if latents_path is not None:
        buf = io.BytesIO()
        np.save(buf, res.latents)
        files.append((latents_path, buf.getvalue()))
    seconds = res.audio.shape[-1] / res.sample_rate
    summary = {"outputs": [str(p) for p in outs], "prompts": prompts, "sample_rate": res.sample_rate,
               "seconds": seconds, "nfe": res.nfe, "backend": pipe.backend, "precision": pipe.precision,
               "providers": pipe.resolution.to_dict()["providers"], "device": pipe.resolution.device,
               "solver": req.solver, "seed": seed,
               "drums_separated": "drums_separator" in res.timings,
               "cfg_terms": [{"kind": t.kind, "weight": t.weight} for t in res.terms],
               "timings_s": {k: round(v, 4) for k, v in res.timings.items()}, "traffic": res.traffic,
               "ode_loop": res.ode_loop,
               "real_time_factor": res.timings["total"] / (len(prompts) * seconds) if seconds > 0 else None}
    signals.check()  # the last moment a signal still means "nothing was written"
    with signals_held() as held:  # from the first rename to the summary: a signal cannot make the report lie
        late = _write_outputs(files) or held.name
        signals.settle()  # every output is in place: from here on a signal is reported after the fact (S09/S10)
        if late:
            summary["late_signal"] = late  # arrived during the renames; every output was completed
        if a.json:
            print(json.dumps(summary, indent=2), flush=True)
        else:
            t = summary["timings_s"]
            rtf = summary["real_time_factor"]
            print(f"wrote {', '.join(summary['outputs'])} — {summary['nfe']} vector-field evaluations, "
                  f"{t['total']:.2f} s total ({summary['backend']})"
                  + ("" if rtf is None else f", RTF {rtf:.3f}") + ("" if seed is None else f", seed {seed}"),
                  flush=True)
    late_signal_note("jasco-run", late or held.name, "the outputs")
    return 0


COMMAND = Command("generate", "generate clips or long songs (the default command)", add_arguments, generate)
