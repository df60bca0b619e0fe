"""Drum separation cost: seconds per 10 s of audio and peak memory, runtime (numpy + ONNX Runtime) vs demucs.

    python -m benchmarks.separation --out DIR [--preset tiny|htdemucs] [--seconds 10] [--provider cpu|cuda]

Builds a random htdemucs of ``preset`` (``htdemucs``: the real architecture, 7.8 s segments; random weights
cost the same as the real ones), exports its ``drums_separator`` graph (fp32, and mixed fp16), then separates a
``--seconds`` mixture, each variant in a process of its own so its peak RSS (VmHWM) is its own:

* ``runtime-fp32`` / ``runtime-fp16``: :func:`jasco_runtime.separation.separate_drums` (no torch imported),
* ``demucs``: ``demucs.apply.apply_model`` on the same model (what audiocraft runs).

The runtime separates once per request (not per CFG row: dropped rows are zeros, which htdemucs maps to
zeros).  Writes ``DIR/separation.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import typing as tp
from pathlib import Path


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(variant: str, work: Path, seconds: float, provider: str, repeats: int) -> tp.Dict[str, tp.Any]:
    """One variant in this (fresh) process."""
    import numpy as np

    mix = np.load(work / "mix.npy")
    record = json.loads((work / "separator.json").read_text())
    times = []
    if variant == "demucs":
        import torch
        from demucs.apply import BagOfModels, apply_model
        from demucs.audio import convert_audio

        from jasco_export.tiny.htdemucs import build_htdemucs

        model = build_htdemucs(record["name"])  # seeded: the same weights the graph was exported from
        x = torch.from_numpy(mix)[None]
        for _ in range(repeats):
            t = time.perf_counter()
            with torch.no_grad():
                drums = apply_model(BagOfModels([model]), x)[:, 0]
                convert_audio(drums, 44100, 32000, 1)
            times.append(time.perf_counter() - t)
    else:
        import onnxruntime as ort

        from jasco_runtime.separation import SeparatorConfig, separate_drums

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
        sess = ort.InferenceSession(str(work / f"drums_separator.{variant.split('-')[1]}.onnx"), providers=providers)
        names = [o.name for o in sess.get_outputs()]
        engine = lambda **feeds: dict(zip(names, sess.run(None, feeds)))  # noqa: E731
        cfg = SeparatorConfig.from_record(record)
        for _ in range(repeats):
            t = time.perf_counter()
            separate_drums(mix, 44100, engine, cfg)
            times.append(time.perf_counter() - t)
        assert "torch" not in sys.modules, "the runtime variant imported torch"
    best = min(times)
    return {"variant": variant, "seconds_audio": seconds, "times_s": times,
            "s_per_10s_audio": best * 10.0 / seconds, "real_time_factor": best / seconds, "peak_rss_mb": _peak_rss_mb()}


def prepare(work: Path, preset: str, seconds: float) -> None:
    import numpy as np

    from jasco_export.graphs import onnx_export
    from jasco_export.graphs.separator import declare_separator, separator_record
    from jasco_export.parity.golden import synthetic_mixture
    from jasco_export.tiny.htdemucs import build_htdemucs

    work.mkdir(parents=True, exist_ok=True)
    model = build_htdemucs(preset)
    spec = declare_separator(model)
    path = onnx_export.export_graph(spec, work / "drums_separator.fp32.onnx")
    onnx_export.convert_fp16(path, work / "drums_separator.fp16.onnx")
    (work / "separator.json").write_text(json.dumps(separator_record(model, preset, 1)))
    np.save(work / "mix.npy", synthetic_mixture(seconds, 44100))


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.separation", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="tiny", choices=["tiny", "htdemucs"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", default="runtime-fp32,runtime-fp16,demucs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    work = a.out / f"separation-{a.preset}"
    if a.child:
        print(json.dumps(_child(a.child, work, a.seconds, a.provider, a.repeats)))
        return 0
    prepare(work, a.preset, a.seconds)
    results = []
    for variant in a.variants.split(","):
        cmd = [sys.executable, "-m", "benchmarks.separation", "--out", str(a.out), "--preset", a.preset,
               "--seconds", str(a.seconds), "--provider", a.provider, "--repeats", str(a.repeats), "--child", variant]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"[separation] {variant}: {results[-1]['s_per_10s_audio']:.2f} s per 10 s, "
              f"peak RSS {results[-1]['peak_rss_mb']:.0f} MB", flush=True)
    (a.out / "separation.json").write_text(json.dumps({"preset": a.preset, "provider": a.provider,
                                                        "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
