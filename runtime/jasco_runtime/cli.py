"""``jasco-run``: generate music from exported JASCO graphs (numpy + ONNX Runtime / TensorRT, no torch).

    jasco-run --engines engines/jasco-chords-drums-400M --text "funky groove" \
              --chords "C:0 F:4 G:6" --drums drums.wav --out out.wav
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import typing as tp
from pathlib import Path

import numpy as np

from .errors import InputError, JascoError
from .export_folder import ExportFolder
from .files import atomic_write_all
from .request import GenerationRequest
from .signals import Terminated, sigterm_interrupts

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class UsageError(Exception):
    """A command-line syntax error (argparse's own check)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a syntax error through :func:`main` (one line, and a JSON object with ``--json``)
    instead of printing the whole usage and exiting from inside ``parse_args``."""

    def error(self, message: str) -> tp.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jasco-run", description="Generate 10 s music clips with exported JASCO graphs.")
    p.add_argument("--engines", required=True, type=Path, help="folder written by jasco-export (holds manifest.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="text prompt (repeat for several clips)")
    src.add_argument("--prompts", type=Path, help="file with one prompt per line")
    p.add_argument("--chords", help='"C:0 F:4 G:6", "(C, 0.0), (D, 2.0)", a .lab or a .json file')
    p.add_argument("--drums", type=Path, help="drums audio: a drum track or any recording (any rate/channels; separated "
                   "by the export's htdemucs when it has one, see --drums-stem)")
    stem = p.add_mutually_exclusive_group()
    stem.add_argument("--drums-stem", dest="drums_stem", action="store_const", const=True,
                      help="--drums is already a drum stem: skip the export's htdemucs separation (by default every "
                           "drums input is separated when the export has a separator, as audiocraft does)")
    stem.add_argument("--separate-drums", dest="drums_stem", action="store_const", const=False,
                      help="require separation of --drums (error if the export has no separator)")
    p.add_argument("--melody", type=Path, help="melody salience .npy, [53, T] or [T, 53] at 50 Hz (T ≥ 1, T ≠ 53)")
    p.add_argument("--cfg-all", type=float, help="CFG weight of the all-conditions term (default: manifest)")
    p.add_argument("--cfg-txt", type=float, help="CFG weight of the text-only term (default: manifest)")
    p.add_argument("--solver", choices=["euler", "midpoint", "heun", "dopri5"])
    p.add_argument("--steps", type=int, help="fixed-step solvers: number of steps (default: manifest)")
    p.add_argument("--duration", type=float, help="song length in seconds (default: one 10-s window; longer songs are "
                                                  "generated window by window, see README 'Longer songs')")
    p.add_argument("--overlap", type=float, help="seconds shared by consecutive windows of a long song (default 2.5)")
    p.add_argument("--rtol", type=float, help="dopri5 only: relative tolerance > 0 (default: manifest)")
    p.add_argument("--atol", type=float, help="dopri5 only: absolute tolerance > 0 (default: manifest)")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, help="seed of the initial noise")
    seed.add_argument("--init-noise", type=Path, help=".npy [B, T, 128] initial noise for exact replay")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime execution provider")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="ONNX graph precision (default fp32 on CPU, fp16 on CUDA; int8: CPU flow step, if exported)")
    p.add_argument("--low-memory", action="store_true",
                   help="hold one graph at a time (peak = the largest graph, for 8-16 GB boards); each graph is "
                        "loaded when the generation reaches it (per window for long songs)")
    p.add_argument("--out", required=True, type=Path, help="OUT.wav; with several prompts OUT_0.wav, OUT_1.wav, ...")
    p.add_argument("--format", default="float", choices=["float", "pcm16"], help="wav sample format")
    p.add_argument("--normalize", choices=["peak", "loudness"], help="normalise each clip")
    p.add_argument("--save-latents", type=Path, help="save the generated latents [B, T, 128] to .npy")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--no-progress", action="store_true")
    return p


def _prompts(a: argparse.Namespace) -> tp.List[str]:
    if a.text:
        return list(a.text)
    try:
        lines = [ln.strip() for ln in a.prompts.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise InputError(f"prompts file {a.prompts} is not UTF-8 text (a binary file?); give one prompt per line") from exc
    except OSError as exc:
        raise InputError(f"cannot read prompts file {a.prompts} ({exc.strerror}); give one prompt per line") from exc
    prompts = [ln for ln in lines if ln]
    if not prompts:
        raise InputError(f"prompts file {a.prompts} is empty; give one prompt per line")
    return prompts


def _output_path(path: Path, option: str, suffix: str) -> Path:
    """An output file we can create: right suffix, existing folder, not itself a folder."""
    if path.suffix.lower() != suffix:
        raise InputError(f"{option} must end in {suffix}, got {path}")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} of {option} does not exist; create it first")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name such as {path / ('out' + suffix)}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write to {path.parent} (permission denied); choose another {option}")
    return path


def _out_paths(out: Path, n: int) -> tp.List[Path]:
    _output_path(out, "--out", ".wav")
    paths = [out] if n == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]
    return [_output_path(p, "--out", ".wav") for p in paths]


def _inputs(a: argparse.Namespace, folder: ExportFolder) -> tp.Dict[str, tp.Any]:
    """Read every input file (chords, drums, melody, init noise) before any engine is loaded."""
    from . import audio_io, chords, separation

    inputs: tp.Dict[str, tp.Any] = {}
    if a.chords is not None:
        inputs["chords"] = chords.parse_chords(a.chords)
    if a.drums is not None:
        if not folder.has_drums:
            raise InputError("this model has no drums conditioner; drop --drums")
        if not a.drums.is_file():
            raise InputError(f"drums file {a.drums} does not exist")
        inputs["drums"], inputs["drums_sample_rate"] = audio_io.load_audio(a.drums)
    if a.drums_stem is not None:
        flag = "--drums-stem" if a.drums_stem else "--separate-drums"
        if not folder.has_drums:
            raise InputError(f"this model has no drums conditioner; drop {flag}")
        if a.drums is None:
            raise InputError(f"{flag} says how to treat --drums; give --drums or drop {flag}")
        if a.drums_stem is False and separation.folder_separator(folder) is None:
            raise InputError(f"{folder.folder} has no drum separator; re-export with `jasco-export --separator "
                             "htdemucs` or drop --separate-drums")
        inputs["drums_stem"] = a.drums_stem
    if a.melody is not None:
        if not folder.has_melody:
            raise InputError("this model has no melody conditioner (melody is only for chords-drums-melody models); "
                             "drop --melody")
        if not a.melody.is_file():
            raise InputError(f"melody file {a.melody} does not exist")
        inputs["melody"] = audio_io.load_melody(a.melody, int(folder.conditioners["melody"]["bins"]))
    if a.init_noise is not None:
        try:
            inputs["init_noise"] = np.load(a.init_noise, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot read --init-noise {a.init_noise} ({detail}); expected a .npy array "
                             "[prompts, frames, 128]") from exc
    return inputs


def _write_outputs(files: tp.Sequence[tp.Tuple[Path, bytes]]) -> None:
    """All outputs or none (temp files, then renames); a disk error is one line."""
    try:
        atomic_write_all(files)
    except OSError as exc:
        folders = sorted({str(p.parent) for p, _ in files})
        raise JascoError(f"cannot write the outputs to {', '.join(folders)} ({exc.strerror or exc}); nothing was "
                         "written — free disk space or choose another --out") from exc


def run(a: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    """Validate every argument and read every input, then load the engines, generate and write all outputs."""
    from . import audio_io, separation
    from .pipeline import JascoPipeline

    prompts = _prompts(a)
    outs = _out_paths(a.out, len(prompts))
    latents_path = None if a.save_latents is None else _output_path(a.save_latents, "--save-latents", ".npy")
    audio_io.check_normalization(a.normalize)
    folder = ExportFolder.open(a.engines)
    req = GenerationRequest(prompts, cfg_coef_all=a.cfg_all, cfg_coef_txt=a.cfg_txt, solver=a.solver, steps=a.steps,
                            rtol=a.rtol, atol=a.atol, seed=a.seed, duration=a.duration, overlap=a.overlap,
                            **_inputs(a, folder)).resolved(folder.defaults)
    pipe = JascoPipeline.from_dir(a.engines, backend=a.backend, providers=[a.provider] if a.provider else None,
                                  precision=a.precision, low_memory=a.low_memory)
    res = pipe.run(req, progress=not a.no_progress)
    subtype = "PCM_16" if a.format == "pcm16" else "FLOAT"
    files = [(path, audio_io.encode_wav(clip, res.sample_rate, subtype=subtype, normalize=a.normalize))
             for path, clip in zip(outs, res.audio)]
    if latents_path is not None:
        buf = io.BytesIO()
        np.save(buf, res.latents)
        files.append((latents_path, buf.getvalue()))
    _write_outputs(files)
    return {"outputs": [str(p) for p in outs], "prompts": prompts, "sample_rate": res.sample_rate,
            "seconds": res.audio.shape[-1] / res.sample_rate, "nfe": res.nfe, "backend": pipe.backend,
            "solver": req.solver,
            "drums_separated": req.drums is not None and req.drums_stem is not True and
            separation.folder_separator(folder) is not None,
            "cfg_terms": [{"kind": t.kind, "weight": t.weight} for t in res.terms],
            "timings_s": {k: round(v, 4) for k, v in res.timings.items()},
            "real_time_factor": res.timings["total"] / (len(prompts) * res.audio.shape[-1] / res.sample_rate)}


def _subcommand(name: str, argv: tp.Sequence[str]) -> int:
    from .verify import VerificationFailed
    from .verify_cli import main as verify_main

    try:
        return {"verify": verify_main}[name](argv)
    except VerificationFailed as exc:
        print(f"jasco-run {name}: {exc}", file=sys.stderr)
        return 1
    except JascoError as exc:
        print(f"jasco-run {name}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"jasco-run {name}: interrupted", file=sys.stderr)
        return 130


def _fail(message: str, code: int, as_json: bool, prefix: str = "error: ") -> int:
    """One line on stderr; with ``--json`` also ``{"error": ..., "exit_code": ...}`` on stdout."""
    print(f"jasco-run: {prefix}{message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
    return code


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """Exit codes: 0 done, 1 internal error (a bug: traceback), 2 bad input or a failed run (one line, nothing
    written), 130 Ctrl-C, 143 SIGTERM (nothing written)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build-engines":  # jasco-run build-engines ENGINES_DIR ... (TensorRT on the target)
        from .tensorrt.cli import main as build_engines

        return build_engines(argv[1:])
    if argv and argv[0] in ("verify",):
        return _subcommand(argv[0], argv[1:])
    as_json = "--json" in argv
    try:
        a = parser().parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc), EXIT_BAD_INPUT, as_json)
    try:
        with sigterm_interrupts():
            summary = run(a)
    except JascoError as exc:
        return _fail(str(exc), EXIT_BAD_INPUT, as_json)
    except Terminated:
        return _fail("terminated by SIGTERM; nothing was written", EXIT_TERMINATED, as_json, prefix="")
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was written", EXIT_INTERRUPTED, as_json, prefix="")
    except Exception as exc:
        if as_json:  # a bug: the traceback goes to stderr, the JSON reader still gets an object
            print(json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}", "exit_code": EXIT_FAILED}))
        raise
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        t = summary["timings_s"]
        print(f"wrote {', '.join(summary['outputs'])} — {summary['nfe']} vector-field evaluations, "
              f"{t['total']:.2f} s total ({summary['backend']}), RTF {summary['real_time_factor']:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
