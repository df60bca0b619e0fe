"""Serving benchmark: jasco-serve under closed-loop load, per concurrency level, batching on and off.

    python -m benchmarks.serve --engines out/demo/engines/chords-drums --concurrency 1,2,4,8 --requests 32
    python -m benchmarks.serve --url http://gpu-box:8000 --concurrency 1,8,32 --requests 256   # a running service

Each level runs ``--requests`` generations from ``concurrency`` clients, each sending its next request when
the previous one is answered (same settings, a new seed each, so every request can share a solve). Reported
per level: throughput (clips per minute of wall time), latency p50/p95/p99 (client side, arrival to last
byte), mean batch size (prompts per ODE solve: requests / solves, each solve counted once through the
``X-Jasco-Batch-Prompts`` header) and non-200 answers. With ``--engines`` the benchmark starts a local Ray
instance and deploys the service once per ``--batching`` mode (off = one prompt per solve). Writes
``results.json``, ``results.md`` (also printed) and ``serve.png``.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import sys
import threading
import time
import typing as tp
from pathlib import Path

import numpy as np

from jasco_runtime.export_folder import Backend, Precision

SCHEMA = "jasco-trt-serve-bench/1"


def _csv(s: str) -> tp.List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--engines", type=Path, help="export folder: deploy jasco-serve on a local Ray instance")
    src.add_argument("--url", help="benchmark a running service instead (its own batching settings apply)")
    p.add_argument("--concurrency", default="1,2,4,8", help="client counts, e.g. 1,2,4,8")
    p.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    p.add_argument("--warmup", type=int, default=2, help="untimed requests before each batching mode")
    p.add_argument("--batching", default="on,off", help="on, off or both (with --engines)")
    p.add_argument("--max-batch-prompts", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=20.0)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"])
    p.add_argument("--precision", choices=Precision.choices())
    p.add_argument("--backend", default="auto", choices=Backend.choices("auto"))
    p.add_argument("--text", default="80s synth-pop with punchy drums")
    p.add_argument("--chords", default="C:0 Am:2.5 F:5 G:7.5")
    p.add_argument("--cfg", default="1.25,2.5", help="cfg_coef_all,cfg_coef_txt")
    p.add_argument("--solver", default="euler")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/serve-<time>)")
    return p.parse_args(argv)


# -- load ---------------------------------------------------------------------------------------------
def run_level(url: str, payload: tp.Mapping[str, tp.Any], concurrency: int, n: int, seed0: int = 0) -> tp.Dict[str, tp.Any]:
    """``n`` requests from ``concurrency`` closed-loop clients; per-request latency, status and batch size."""
    import requests

    seeds = iter(range(seed0, seed0 + n))
    lock = threading.Lock()
    records: tp.List[tp.Dict[str, tp.Any]] = []

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                seed = next(seeds, None)
            if seed is None:
                return
            start = time.perf_counter()
            try:
                r = session.post(f"{url}/v1/generate", json={**payload, "seed": seed}, timeout=3600)
                status, batch = r.status_code, int(r.headers.get("X-Jasco-Batch-Prompts", 0) or 0)
            except requests.RequestException:
                status, batch = -1, 0
            with lock:
                records.append({"latency": time.perf_counter() - start, "status": status, "batch": batch})

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    return summarize(records, wall, concurrency)


def summarize(records: tp.Sequence[tp.Mapping[str, tp.Any]], wall: float, concurrency: int) -> tp.Dict[str, tp.Any]:
    ok = [r for r in records if r["status"] == 200]
    lat = np.asarray([r["latency"] for r in ok], dtype=np.float64)
    batches = [r["batch"] for r in ok if r["batch"] > 0]
    solves = sum(1.0 / b for b in batches)  # a solve of b prompts answers b requests
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: None)
    return {"concurrency": concurrency, "requests": len(records), "ok": len(ok),
            "errors": {str(s): sum(1 for r in records if r["status"] == s) for s in sorted({r["status"] for r in records}) if s != 200},
            "wall_s": wall, "throughput_clips_per_min": 60.0 * len(ok) / wall if wall > 0 else None,
            "latency_s": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "mean": float(lat.mean()) if lat.size else None},
            "mean_batch_prompts": len(batches) / solves if solves else None}


# -- the service ----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalService:
    """jasco-serve on a private local Ray instance, redeployed per batching mode."""

    def __init__(self, args: argparse.Namespace):
        import ray
        from ray import serve

        self.args, self.port = args, _free_port()
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        self.url = f"http://127.0.0.1:{self.port}"

    def deploy(self, batching: bool) -> tp.Dict[str, tp.Any]:
        from ray import serve

        from jasco_serve.app import build_app
        from jasco_serve.config import ServeConfig

        a = self.args
        cfg = ServeConfig(a.engines.resolve(), port=self.port, replicas=a.replicas, gpus_per_replica=a.gpus_per_replica,
                          cpus_per_replica=0, max_batch_prompts=a.max_batch_prompts if batching else 1,
                          batch_wait_ms=a.batch_wait_ms if batching else 0.0, max_queued=4096, request_timeout=3600,
                          backend=a.backend, provider=a.provider, precision=a.precision, app_name="bench").check()
        serve.run(build_app(cfg), name="bench", route_prefix="/")
        return {"max_batch_prompts": cfg.max_batch_prompts, "batch_wait_ms": cfg.batch_wait_ms, "replicas": cfg.replicas,
                "gpus_per_replica": cfg.gpus_per_replica}

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def _machine() -> tp.Dict[str, tp.Any]:
    import importlib.metadata as md

    from .flops import cpu_info

    versions = {}
    for pkg in ("onnxruntime", "onnxruntime-gpu", "tensorrt", "ray", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"cpu": cpu_info(), "platform": platform.platform(), "python": platform.python_version(),
            "versions": versions, "loadavg_start": list(os.getloadavg())}


def run(args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    import requests

    all_, txt = (float(x) for x in _csv(args.cfg))
    payload = {"text": args.text, "chords": args.chords, "cfg_coef_all": all_, "cfg_coef_txt": txt,
               "solver": args.solver, "steps": args.steps}
    levels = [int(c) for c in _csv(args.concurrency)]
    modes = _csv(args.batching) if args.engines else ["server"]
    results: tp.Dict[str, tp.Any] = {
        "schema": SCHEMA, "command": "python -m benchmarks.serve " + " ".join(getattr(args, "_argv", [])),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": _machine(), "request": payload,
        "config": {"requests_per_level": args.requests, "concurrency": levels, "warmup": args.warmup}, "modes": {}}
    service = LocalService(args) if args.engines else None
    try:
        url = service.url if service else args.url.rstrip("/")
        for mode in modes:
            deployed = service.deploy(batching=(mode == "on")) if service else {}
            model = requests.get(f"{url}/v1/models", timeout=300).json()
            results["model"] = {k: model.get(k) for k in ("model", "backend", "precision", "providers", "duration")}
            run_level(url, payload, max(levels), args.warmup, seed0=10**6)  # untimed
            entry = {"service": deployed or model.get("limits"), "levels": []}
            for c in levels:
                level = run_level(url, payload, c, args.requests, seed0=c * 10**4)
                print(f"[serve-bench] batching {mode} concurrency {c}: {level['throughput_clips_per_min']:.2f} clips/min, "
                      f"p50 {level['latency_s']['p50']:.2f} s, mean batch {level['mean_batch_prompts']}", flush=True)
                entry["levels"].append(level)
            results["modes"][mode] = entry
    finally:
        if service:
            service.close()
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


# -- report ---------------------------------------------------------------------------------------------
def _s(x: tp.Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f} s"


def markdown(results: tp.Dict[str, tp.Any]) -> str:
    m, model = results["machine"], results.get("model", {})
    req = results["request"]
    lines = [f"# jasco-serve benchmark — {model.get('model')} ({model.get('backend')} {model.get('precision')})", "",
             f"- date: {results['date']}; machine: {m['cpu'].get('model_name')} ({m['cpu'].get('logical_cpus')} logical CPUs)"
             f"; load average {m['loadavg_start'][0]:.2f} at start, {m.get('loadavg_end', [float('nan')])[0]:.2f} at end",
             f"- request: {req['solver']} {req['steps']} steps, cfg {req['cfg_coef_all']}/{req['cfg_coef_txt']}, chords, "
             f"one {model.get('duration')} s clip; {results['config']['requests_per_level']} requests per level, closed loop",
             f"- command: `{results['command']}`", "",
             "| batching | clients | throughput (clips/min) | p50 | p95 | p99 | mean batch (prompts/solve) | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, entry in results["modes"].items():
        svc = entry.get("service") or {}
        label = f"{mode} (≤ {svc.get('max_batch_prompts')})" if svc.get("max_batch_prompts") else mode
        for lv in entry["levels"]:
            lat = lv["latency_s"]
            mb = "-" if lv["mean_batch_prompts"] is None else f"{lv['mean_batch_prompts']:.2f}"
            tput = "-" if lv["throughput_clips_per_min"] is None else f"{lv['throughput_clips_per_min']:.2f}"
            lines.append(f"| {label} | {lv['concurrency']} | {tput} | {_s(lat['p50'])} | {_s(lat['p95'])} | "
                         f"{_s(lat['p99'])} | {mb} | {sum(lv['errors'].values()) or 0} |")
    return "\n".join(lines) + "\n"


def plot(results: tp.Dict[str, tp.Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, (mode, entry) in enumerate(results["modes"].items()):
        color = f"C{k}"
        c = [lv["concurrency"] for lv in entry["levels"]]
        ax1.plot(c, [lv["throughput_clips_per_min"] for lv in entry["levels"]], marker="o", color=color,
                 label=f"batching {mode}")
        for q, style in (("p50", "-"), ("p95", "--")):
            ax2.plot(c, [lv["latency_s"][q] for lv in entry["levels"]], style, marker="o", color=color,
                     label=f"batching {mode} {q}")
    ax1.set(xlabel="concurrent clients", ylabel="clips / min", title="throughput")
    ax2.set(xlabel="concurrent clients", ylabel="seconds (client side)", title="latency")
    levels = results["config"]["concurrency"]
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(x) for x in levels])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"jasco-serve — {results.get('model', {}).get('model')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: tp.Dict[str, tp.Any], out: Path) -> tp.Dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "serve.png"}
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(markdown(results))
    plot(results, paths["plot"])
    return paths


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args._argv = argv
    out = args.out or Path(__file__).resolve().parent / "results" / f"serve-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write(run(args), out)
    print(paths["markdown"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
