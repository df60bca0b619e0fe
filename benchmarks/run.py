"""``python -m benchmarks.run``: PyTorch vs ONNX Runtime vs TensorRT, per component and end to end.

Examples::

    # the cited CPU run: 400M flow step, torch fp32 vs ONNX Runtime fp32 vs int8 (≈ 10 min cold, 2 cores)
    python -m benchmarks.run --model 400m-random --components flow_step --backends torch,ort-cpu \\
        --precision fp32,int8 --batch 1 --cfg demo --repeats 5 --out benchmarks/results/400m-flow-cpu
    # everything on the tiny model (seconds)
    python -m benchmarks.run --model tiny --precision fp32,int8 --batch 1,2
    # CI smoke: checks the harness and its output format, not the numbers
    python -m benchmarks.run --smoke --out /tmp/bench-smoke

A run has five steps, one module each: :mod:`.plan` (what runs, from the arguments), :mod:`.prepare`
(model, exports, inputs, variants), :mod:`.measure` (interleaved timings under one set of timing rules
for every backend, outputs, solves, memory), :mod:`.assess` (speed-ups, errors, FLOP rates, targets)
and :mod:`.report` (``results.json``, ``results.md`` (also printed) and ``latency.png`` into ``--out``).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import typing as tp
from pathlib import Path

from .models import DEFAULT_CACHE


def parse_args(argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | 400m-random | 1b-random | hub id | checkpoint folder")
    p.add_argument("--backends", default="auto",
                   help="comma list of torch, torch-cuda, torch-compile, ort-cpu, ort-cuda, trt; "
                        "auto = torch,ort-cpu plus torch-cuda,ort-cuda,trt where available")
    p.add_argument("--precision", default="fp32",
                   help="comma list of fp32, fp32-fused, fp16, bf16, int8 (per backend where supported; "
                        "fp32-fused = ONNX fp32 flow step with fused attention)")
    p.add_argument("--batch", default="1", help="comma list of prompt batch sizes (CFG rows = batch × terms)")
    p.add_argument("--solver", default="euler", choices=["euler", "midpoint", "heun", "dopri5"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cfg", default="demo", choices=["demo", "all-only"])
    p.add_argument("--components", default="all",
                   help="comma list of text_encoder, drums_encoder, flow_step, decoder, end_to_end (all)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median, p10, p90)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per measurement first")
    p.add_argument("--e2e-repeats", type=int, default=None, help="timed generations (default: --repeats)")
    p.add_argument("--quality", default="reduced", choices=["none", "reduced", "all"],
                   help="latents rel-L2 after the solve vs the fp32 reference, for reduced-precision variants "
                        "(default), every variant, or none")
    p.add_argument("--memory", default="isolated", choices=["isolated", "shared", "none"],
                   help="peak RSS per variant from a process of its own (isolated, default), or only the "
                        "shared timing process's RSS")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime (physical cores)")
    p.add_argument("--no-baseline", action="store_true", help="do not add the PyTorch baselines automatically")
    p.add_argument("--parity", action="store_true", help="run the exporter's parity gate when exporting")
    p.add_argument("--fresh", action="store_true", help="re-export even if a cached export exists")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="random models and exports (default benchmarks/.cache)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<model>-<time>)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, 1 repeat, 2 steps, all components, fp32, fp32-fused, int8: checks the harness, not the numbers")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.model, args.repeats, args.warmup, args.e2e_repeats, args.steps = "tiny", 1, 1, 1, 2
        if args.precision == "fp32":
            args.precision = "fp32,fp32-fused,int8"
    return args


def run(args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    """plan → prepare → measure → assess → report document (one module each)."""
    from .assess import assess
    from .measure import measure
    from .memory import MemoryProbe
    from .plan import make_plan
    from .prepare import prepare
    from .report import document

    started = time.perf_counter()
    plan = make_plan(args)
    probe = MemoryProbe()
    try:
        prep = prepare(plan, probe)
        measured = measure(plan, prep, probe)
    finally:
        probe.close()
    return document(plan, prep, measured, assess(plan, prep, measured), started)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    from jasco_runtime.errors import InputError

    from .report import write

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="[bench] %(message)s")
    for noisy in ("jasco_export", "onnxruntime", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out or Path(__file__).resolve().parent / "results" / f"{args.model.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        results = run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write(results, out)
    print(paths["markdown"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
