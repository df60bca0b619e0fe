"""``jasco-export`` command line.

    jasco-export --model facebook/jasco-chords-drums-400M [--out engines/NAME] [...]
    jasco-export make-tiny --out DIR          # tiny random models in a Hugging Face cache layout
    jasco-export demo [--out DIR]             # tiny model → export → jasco-run → wav + parity table
    jasco-export separate-drums MIX OUT.wav   # htdemucs drum stem (needs demucs + its weights)
    jasco-export verify ENGINES_DIR [--model ID]   # re-run the parity gate on an existing folder
"""
from __future__ import annotations

import argparse
import os
import sys
import typing as tp
from pathlib import Path

from jasco_runtime.cli.command import Parser, UsageError
from jasco_runtime.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED
from jasco_runtime.signals import Terminated, interrupts
from jasco_runtime.export_folder import EXPORT_TARGETS, Backend, Precision
from jasco_runtime.verify import VerificationFailed

from .errors import JascoError

TINY_SEPARATOR = "hf://jasco-tiny/htdemucs"  # the random htdemucs make-tiny writes (tiny/htdemucs.py)


def _export_parser() -> argparse.ArgumentParser:
    p = Parser(prog="jasco-export", description="Export a JASCO checkpoint to ONNX / TensorRT "
                                "and check every graph against the PyTorch reference.",
                                epilog="Other commands: `jasco-export make-tiny --out DIR`, `jasco-export demo`, "
                                       "`jasco-export verify ENGINES_DIR [--model ID]`.")
    p.add_argument("--model", required=True, help="hub id (e.g. facebook/jasco-chords-drums-400M) or local folder")
    p.add_argument("--out", type=Path, help="output folder (default engines/<model-name>)")
    p.add_argument("--precision", default="fp32,fp16", help=f"comma list of {', '.join(Precision.choices())} (default "
                   "fp32,fp16; int8 adds a dynamically quantised flow step for ONNX Runtime CPU)")
    p.add_argument("--backend", default=Backend.ONNXRUNTIME.value, choices=[*Backend.spellings(), *EXPORT_TARGETS],
                   metavar="{" + ",".join(Backend.choices(*EXPORT_TARGETS)) + "}",
                   help="onnxruntime (onnx): ONNX graphs only; tensorrt (trt): also FP16 TensorRT engines, required "
                        "(needs tensorrt + GPU); all: engines where TensorRT works")
    p.add_argument("--max-batch", type=int, default=6, help="max CFG rows per engine call (prompts × terms), default 6")
    p.add_argument("--max-text-tokens", type=int, default=128, help="max T5 tokens in the engines' profiles")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--t5", help="T5 hub id or folder overriding the one named in xp.cfg")
    p.add_argument("--chords-mapping", help="chord_to_index_mapping.pkl (default: next to the checkpoint)")
    p.add_argument("--revision", help="hub revision")
    p.add_argument("--graphs", help="comma list of graphs to export (default all)")
    p.add_argument("--separator", default="auto",
                   help="drum separator exported as drums_separator, run on every drums input as audiocraft does: "
                        "auto (htdemucs when demucs and its weights are on this machine, else none), htdemucs, "
                        "hf://ORG/htdemucs, PATH.safetensors (demucs' format) or none (drums are stems)")
    p.add_argument("--no-parity-gate", action="store_true", help="keep the artifacts even if parity fails")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end Euler-10 parity run")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (the summary table and errors still print)")
    return p


def _check_paths(a: argparse.Namespace) -> None:
    """Path arguments checked before the checkpoint is loaded (minutes at 1B); the numeric options are
    checked by ``exporter.check_options``, first thing in ``run_export``."""
    from jasco_runtime.chords import load_chord_mapping
    from jasco_runtime.cli.paths import input_file

    from .errors import InputError

    if a.chords_mapping is not None:  # a folder or /dev/zero is not "missing" (XE09); contents too (XE06–XE08)
        input_file(Path(a.chords_mapping), "--chords-mapping", "pass audiocraft's assets/chord_to_index_mapping.pkl")
        load_chord_mapping(a.chords_mapping)
    if a.backend == "trt":  # before the checkpoint loads, not after the whole export (XO10)
        from jasco_runtime.backends import tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
        if reason:
            raise InputError(f"--backend trt: TensorRT engines cannot be built here ({reason}); use --backend onnx "
                             "here and `jasco-run build-engines` on the GPU that runs them")


def _export(argv: tp.Sequence[str]) -> int:
    from .exporter import ExportOptions, run_export, summary_table

    a = _export_parser().parse_args(argv)
    from . import progress

    progress.QUIET = a.quiet
    _check_paths(a)
    opts = ExportOptions(model=a.model, out=a.out, precisions=tuple(p.strip() for p in a.precision.split(",") if p.strip()),
                         backend=a.backend, max_batch=a.max_batch, max_text_tokens=a.max_text_tokens, opset=a.opset,
                         t5=a.t5, chords_mapping=a.chords_mapping, revision=a.revision, parity_gate=not a.no_parity_gate,
                         force=a.force, graphs=a.graphs.split(",") if a.graphs else None, end_to_end=not a.no_e2e,
                         separator=a.separator)
    res = run_export(opts)
    print(summary_table(res))
    print(f"[jasco-export] wrote {res.out} in {res.timings['total']:.1f} s — "
          f"parity {'PASSED' if res.parity['passed'] else 'FAILED (kept: --no-parity-gate)'}")
    if res.late_signal:
        print(f"jasco-export: {res.late_signal} arrived while the finished export was being put in place; "
              f"it was completed: {res.out}", file=sys.stderr)
    return 0 if res.parity["passed"] else EXIT_FAILED


def _make_tiny(argv: tp.Sequence[str]) -> int:
    from .errors import InputError
    from .tiny.presets import PRESETS, VARIANTS, make_tiny_models

    p = Parser(prog="jasco-export make-tiny",
                                description="Write tiny random JASCO models (release format) into a Hugging Face cache.")
    p.add_argument("--out", type=Path, required=True, help="folder; the cache goes to OUT/hub")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="tiny (CI-sized) or the real 400m / 1b architectures with random weights")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    variants = list(dict.fromkeys(v.strip() for v in a.variants.split(",") if v.strip()))  # each once (MT02)
    unknown = [v for v in variants if v not in VARIANTS]
    if not variants:  # MT05
        raise InputError(f"--variants {a.variants!r} names no variant; choose from {', '.join(VARIANTS)}")
    if unknown:
        raise InputError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    _check_out_folder(a.out)
    hub = make_tiny_models(a.out, seed=a.seed, force=a.force, preset=a.preset, variants=variants)
    org = PRESETS[a.preset]["org"]
    print(f"{a.preset} models in {hub}\nuse them with:\n  export HF_HUB_CACHE={hub.resolve()} HF_HUB_OFFLINE=1\n"
          f"  jasco-export --model {org}/{variants[0]}"
          + (f" --separator hf://{org}/htdemucs" if (hub / f"models--{org}--HTDemucs").exists() else ""))
    return 0


def _check_out_folder(out: Path) -> None:
    """``--out`` of make-tiny/demo is a folder: an existing file there, or a name too long, is bad input, said up
    front (MT04, MT08).  ``main`` prefixes the line with ``jasco-export: error:``, so the option is named bare."""
    from jasco_runtime.cli.paths import input_folder

    input_folder(out, "--out", "give a folder (it is created if missing)")


def _separate(argv: tp.Sequence[str]) -> int:
    """Drum stem of a mixture with htdemucs (what audiocraft does to every drums input)."""
    p = Parser(prog="jasco-export separate-drums", description=_separate.__doc__)
    p.add_argument("input", type=Path, help="audio mixture")
    p.add_argument("output", type=Path, help="drum stem .wav (32 kHz mono)")
    a = p.parse_args(argv)
    import numpy as np
    import torch

    from jasco_runtime.audio_io import load_audio, write_wav

    from .reference.separation import separate_drums

    wav, sr = load_audio(a.input)
    stem = separate_drums(torch.from_numpy(np.ascontiguousarray(wav))[None], sr)
    write_wav(a.output, stem[0].numpy(), 32000)
    print(f"drum stem written to {a.output}")
    return 0


def _demo(argv: tp.Sequence[str]) -> int:
    """Tiny model end to end: make-tiny → export (with parity table) → jasco-run → wav."""
    p = Parser(prog="jasco-export demo", description=_demo.__doc__)
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--variant", default="chords-drums", choices=["chords-drums", "chords-drums-melody"])
    a = p.parse_args(argv)
    _check_out_folder(a.out)
    from .exporter import ExportOptions, run_export
    from .tiny.presets import make_tiny_models

    hub = make_tiny_models(a.out / "tiny")
    os.environ["HF_HUB_CACHE"] = str(hub.resolve())
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants as hc  # the hub reads these at import time

    hc.HF_HUB_CACHE = str(hub.resolve())
    hc.HF_HUB_OFFLINE = True
    engines = a.out / "engines" / a.variant
    import importlib.util

    separator = TINY_SEPARATOR if importlib.util.find_spec("demucs") else "none"
    res = run_export(ExportOptions(model=f"jasco-tiny/{a.variant}", out=engines, force=True, separator=separator))
    from jasco_runtime.audio_io import write_wav
    from jasco_runtime.cli import main as run_main

    from .parity.golden import synthetic_mixture

    wav, mix = a.out / "demo.wav", a.out / "mix.wav"
    write_wav(mix, synthetic_mixture(10.0, 44100), 44100)  # a "song": separated by the tiny htdemucs first
    code = run_main(["--engines", str(engines), "--text", "upbeat funk groove with slap bass",
                     "--chords", "C:0 F:2.5 G:5 C:7.5", "--cfg-all", "1.25", "--cfg-txt", "2.5", "--steps", "10",
                     "--seed", "0", "--drums", str(mix), "--out", str(wav)])
    print(f"[demo] engines: {engines}\n[demo] parity: {'PASSED' if res.parity['passed'] else 'FAILED'} "
          f"({engines / 'parity.json'})\n[demo] audio: {wav}")
    return code if res.parity["passed"] else EXIT_FAILED


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from jasco_runtime.cli import logs

    logs.configure("jasco-export")  # warnings as one line each: "jasco-export: warning: ..."
    from .parity.command import main as _verify

    commands = {"make-tiny": _make_tiny, "demo": _demo, "separate-drums": _separate, "verify": _verify}
    prog = f"jasco-export {argv[0]}" if argv and argv[0] in commands else "jasco-export"
    try:
        with interrupts():  # every subcommand: SIGTERM/SIGINT clean up (temp folders, .golden-*) (SV03, MK01)
            if argv and argv[0] in commands:
                return commands[argv[0]](argv[1:])
            return _export(argv)
    except UsageError as exc:  # one line, not the whole usage (MT07)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except VerificationFailed as exc:
        print(f"jasco-export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except JascoError as exc:
        print(f"jasco-export: error: {exc}", file=sys.stderr)
        from .errors import InputError, ModelNotFoundError, CheckpointError

        return EXIT_BAD_INPUT if isinstance(exc, (InputError, ModelNotFoundError, CheckpointError)) else EXIT_FAILED
    except Terminated:
        print("jasco-export: terminated by SIGTERM; temporary files removed", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("jasco-export: interrupted; temporary files removed", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
