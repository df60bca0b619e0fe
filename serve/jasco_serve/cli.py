"""``jasco-serve``: the JASCO HTTP service on Ray Serve.

    jasco-serve --engines out/demo/engines/chords-drums              # local Ray, http://127.0.0.1:8000
    jasco-serve --engines /models/jasco-400M --address auto --replicas 4 --gpus-per-replica 0.5 --provider cuda

Starts (or joins, ``--address``) Ray, deploys one ingress and ``--replicas`` generator replicas, and runs
until SIGTERM / Ctrl-C. Then it drains: new requests get 503, in-flight ones get their answers (up to
``--request-timeout``), the application is removed, and the process exits 0. Bad settings or engines exit 2.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import typing as tp
from pathlib import Path

from jasco_runtime.errors import JascoError
from jasco_runtime.export_folder import Backend, ExportFolder, Precision

from .config import PROVIDERS, ServeConfig

EXIT_BAD_INPUT = 2
logger = logging.getLogger("jasco_serve")


def parser() -> argparse.ArgumentParser:
    d = ServeConfig(Path("."))
    p = argparse.ArgumentParser(prog="jasco-serve", description="Serve exported JASCO graphs over HTTP (Ray Serve).")
    p.add_argument("--engines", required=True, type=Path, help="folder written by jasco-export (holds manifest.json)")
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"HTTP port (default {d.port})")
    p.add_argument("--replicas", type=int, default=d.replicas, help="generator replicas, each with the engines loaded")
    p.add_argument("--gpus-per-replica", type=float, default=d.gpus_per_replica,
                   help="GPUs per replica (0.5: two replicas per GPU; 0: CPU)")
    p.add_argument("--cpus-per-replica", type=float, default=d.cpus_per_replica, help="Ray CPUs reserved per replica")
    p.add_argument("--max-batch-prompts", type=int, default=d.max_batch_prompts, help="prompts in one ODE solve")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms, help="how long a replica waits to fill a batch")
    p.add_argument("--max-queued", type=int, default=d.max_queued,
                   help="generation requests admitted at once (waiting or generating); more get 503 + Retry-After")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout, help="seconds until 504")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="request body limit (413 above)")
    p.add_argument("--address", help="Ray cluster to join (e.g. auto, ray://head:10001); default: a local Ray instance")
    p.add_argument("--backend", default="auto", choices=Backend.choices("auto"))
    p.add_argument("--provider", choices=list(PROVIDERS), help="ONNX Runtime execution provider")
    p.add_argument("--precision", choices=Precision.choices(),
                   help="ONNX graph precision (default fp32 on CPU, fp16 on CUDA; int8: CPU flow step, if exported)")
    p.add_argument("--name", default=d.app_name, help="Ray Serve application name")
    p.add_argument("--route-prefix", default=d.route_prefix, help="URL prefix of the service")
    return p


def config_from_args(a: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        engines=a.engines.resolve(), host=a.host, port=a.port, replicas=a.replicas, gpus_per_replica=a.gpus_per_replica,
        cpus_per_replica=a.cpus_per_replica, max_batch_prompts=a.max_batch_prompts, batch_wait_ms=a.batch_wait_ms,
        max_queued=a.max_queued, request_timeout=a.request_timeout, max_upload_mb=a.max_upload_mb, address=a.address,
        backend=a.backend, provider=a.provider, precision=a.precision, app_name=a.name, route_prefix=a.route_prefix,
    ).check()


class _Stop:
    """SIGTERM / SIGINT → stop; a second signal skips the drain."""

    def __init__(self) -> None:
        self.event, self.count = threading.Event(), 0

    def __call__(self, signum: int, frame: tp.Any) -> None:
        self.count += 1
        self.event.set()


def drain(config: ServeConfig, poll_s: float = 0.2, grace_s: float = 1.0, stop: tp.Optional[_Stop] = None) -> int:
    """Refuse new generations, wait until the admitted ones are answered (at most the request timeout).
    Returns the number still in flight when it gave up (0 when drained)."""
    from ray import serve

    ingress = serve.get_deployment_handle("JascoIngress", app_name=config.app_name)
    left = ingress.begin_drain.remote().result()
    deadline = time.monotonic() + config.request_timeout + 5
    while left and time.monotonic() < deadline and (stop is None or stop.count < 2):
        time.sleep(poll_s)
        left = ingress.in_flight.remote().result()
    time.sleep(grace_s)  # let the proxy finish sending the last answers
    return left


def serve_forever(config: ServeConfig) -> int:
    import ray
    from ray import serve

    from .app import build_app

    stop = _Stop()
    previous: tp.Dict[int, tp.Any] = {}
    try:
        if config.address:
            ray.init(address=config.address, log_to_driver=False)
        else:  # a private local instance: Ray's own ports stay on loopback
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        # after ray.init, which installs its own fatal-signal handlers
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        serve.start(http_options={"host": config.host, "port": config.port})
        try:
            serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
        except RuntimeError as exc:  # a replica's constructor failed (its error is in the Ray logs above)
            print(f"jasco-serve: error: the application did not start ({str(exc).splitlines()[0]})", file=sys.stderr)
            return 1
        url = f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}/"
        print(f"jasco-serve: ready at {url} ({config.replicas} replica(s); POST {url}v1/generate)", flush=True)
        stop.event.wait()
        print("jasco-serve: stopping — draining in-flight requests", flush=True)
        left = drain(config, stop=stop)
        if left:
            print(f"jasco-serve: {left} request(s) still in flight at the deadline", file=sys.stderr, flush=True)
        return 0
    finally:
        try:
            if config.address:
                serve.delete(config.app_name)  # leave the cluster's other applications alone
            else:
                serve.shutdown()
        except Exception as exc:  # noqa: BLE001 — shutting down anyway
            logger.warning("serve shutdown: %s", exc)
        ray.shutdown()
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    a = parser().parse_args(argv)
    try:
        config = config_from_args(a)
        ExportFolder.open(config.engines).runtime_graphs()  # a bad folder is an error before Ray starts
    except JascoError as exc:
        print(f"jasco-serve: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        print('jasco-serve: error: Ray Serve is not installed; `pip install "jasco-trt[serve]"` (or "ray[serve]")',
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return serve_forever(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
