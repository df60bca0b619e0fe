"""``jasco-run``: generate music from exported JASCO graphs (numpy + ONNX Runtime / TensorRT, no torch).

    jasco-run --engines engines/jasco-chords-drums-400M --text "funky groove" \
              --chords "C:0 F:4 G:6" --drums drums.wav --out out.wav
"""
from __future__ import annotations

import argparse
import json
import sys
import typing as tp
from pathlib import Path

import numpy as np

from .errors import InputError, JascoError

EXIT_BAD_INPUT = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jasco-run", description="Generate 10 s music clips with exported JASCO graphs.")
    p.add_argument("--engines", required=True, type=Path, help="folder written by jasco-export (holds manifest.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="text prompt (repeat for several clips)")
    src.add_argument("--prompts", type=Path, help="file with one prompt per line")
    p.add_argument("--chords", help='"C:0 F:4 G:6", "(C, 0.0), (D, 2.0)", a .lab or a .json file')
    p.add_argument("--drums", type=Path, help="drum stem audio (any rate/channels; resampled to the model rate)")
    p.add_argument("--melody", type=Path, help="melody salience .npy, [53, T] or [T, 53] at 50 Hz")
    p.add_argument("--cfg-all", type=float, help="CFG weight of the all-conditions term (default: manifest)")
    p.add_argument("--cfg-txt", type=float, help="CFG weight of the text-only term (default: manifest)")
    p.add_argument("--solver", choices=["euler", "midpoint", "heun", "dopri5"])
    p.add_argument("--steps", type=int, help="fixed-step solvers: number of steps (default: manifest)")
    p.add_argument("--duration", type=float, help="song length in seconds (default: one 10-s window; longer songs are "
                                                  "generated window by window, see README 'Longer songs')")
    p.add_argument("--overlap", type=float, help="seconds shared by consecutive windows of a long song (default 2.5)")
    p.add_argument("--rtol", type=float)
    p.add_argument("--atol", type=float)
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, help="seed of the initial noise")
    seed.add_argument("--init-noise", type=Path, help=".npy [B, T, 128] initial noise for exact replay")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], help="ONNX Runtime execution provider")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="ONNX graph precision (default fp32 on CPU, fp16 on CUDA; int8: CPU flow step, if exported)")
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
        lines = [ln.strip() for ln in a.prompts.read_text().splitlines()]
    except OSError as exc:
        raise InputError(f"cannot read prompts file {a.prompts} ({exc.strerror}); give one prompt per line") from exc
    prompts = [ln for ln in lines if ln]
    if not prompts:
        raise InputError(f"prompts file {a.prompts} is empty; give one prompt per line")
    return prompts


def _out_paths(out: Path, n: int) -> tp.List[Path]:
    if out.suffix.lower() != ".wav":
        raise InputError(f"--out must end in .wav, got {out}")
    if not out.parent.exists():
        raise InputError(f"output folder {out.parent} does not exist; create it first")
    return [out] if n == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def run(a: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    from . import audio_io
    from .pipeline import JascoPipeline

    prompts = _prompts(a)
    outs = _out_paths(a.out, len(prompts))
    noise = None
    if a.init_noise is not None:
        try:
            noise = np.load(a.init_noise)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read --init-noise {a.init_noise} ({exc}); expected a .npy array") from exc
    if a.drums is not None and not a.drums.is_file():
        raise InputError(f"drums file {a.drums} does not exist")
    if a.melody is not None and not a.melody.is_file():
        raise InputError(f"melody file {a.melody} does not exist")
    pipe = JascoPipeline.from_dir(a.engines, backend=a.backend, providers=[a.provider] if a.provider else None,
                                  precision=a.precision)
    res = pipe.generate(prompts, chords=a.chords, drums=a.drums, melody=a.melody, cfg_coef_all=a.cfg_all,
                        cfg_coef_txt=a.cfg_txt, solver=a.solver, steps=a.steps, rtol=a.rtol, atol=a.atol,
                        seed=a.seed, init_noise=noise, progress=not a.no_progress, duration=a.duration,
                        overlap=a.overlap)
    subtype = "PCM_16" if a.format == "pcm16" else "FLOAT"
    for path, clip in zip(outs, res.audio):
        audio_io.write_wav(path, clip, res.sample_rate, subtype=subtype, normalize=a.normalize)
    if a.save_latents is not None:
        audio_io.atomic_write(a.save_latents, lambda f: np.save(f, res.latents))
    return {"outputs": [str(p) for p in outs], "prompts": prompts, "sample_rate": res.sample_rate,
            "seconds": res.audio.shape[-1] / res.sample_rate, "nfe": res.nfe, "backend": pipe.backend,
            "solver": a.solver or pipe.manifest.defaults["solver"],
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


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("verify",):
        return _subcommand(argv[0], argv[1:])
    a = parser().parse_args(argv)
    try:
        summary = run(a)
    except JascoError as exc:
        print(f"jasco-run: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("jasco-run: interrupted", file=sys.stderr)
        return 130
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        t = summary["timings_s"]
        print(f"wrote {', '.join(summary['outputs'])} — {summary['nfe']} vector-field evaluations, "
              f"{t['total']:.2f} s total ({summary['backend']}), RTF {summary['real_time_factor']:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
