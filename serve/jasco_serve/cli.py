"""``jasco-serve``: the JASCO HTTP service on Ray Serve.

    jasco-serve --engines out/demo/engines/chords-drums              # local Ray, http://127.0.0.1:8000
    jasco-serve --engines /models/jasco-400M --address auto --replicas 4 --gpus-per-replica 0.5 --provider cuda

Starts (or joins, ``--address``) Ray, deploys one ingress and the generator replicas, and runs until SIGTERM /
Ctrl-C. Then it drains: new requests get 503, in-flight ones get their answers (up to ``--request-timeout``),
the application is removed, and the process exits 0 (143 / 130 when the signal came during start-up). Bad
settings, engines, ports, providers or resources exit 2 with one line before Ray starts (:mod:`.preflight`).
Until the application is ready every request gets a JSON 503 with ``Retry-After`` (:mod:`.starting`).
The private local instance keeps every port on loopback (:mod:`.loopback`); at exit its processes are stopped
(none outlives the command) and its session folder is removed. SIGHUP re-reads ``--api-key-file``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import typing as tp
from pathlib import Path

from jasco_runtime.errors import JascoError
from jasco_runtime.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from jasco_runtime.export_folder import Backend, Precision

from . import loopback, preflight
from .config import AUTO, PROVIDERS, ServeConfig
from .http_io import bounded

CONTROL_TIMEOUT_S = 15.0  # a control call to the ingress (drain, key reload)
REAP_GRACE_S = 1.0  # how long a Ray process left after ray.shutdown() has between SIGTERM and SIGKILL
logger = logging.getLogger("jasco_serve")


def parser() -> argparse.ArgumentParser:
    d = ServeConfig(Path("."))
    p = _ArgumentParser(prog="jasco-serve", description="Serve exported JASCO graphs over HTTP (Ray Serve).")
    p.add_argument("--engines", required=True, type=Path, action="append",
                   help="folder written by jasco-export (holds manifest.json); repeat it to serve several models "
                        "(requests choose with the \"model\" field, default the first)")
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"HTTP port (default {d.port})")
    p.add_argument("--replicas", type=_replicas, default=d.replicas,
                   help="generator replicas, each with the engines loaded, or auto (Ray Serve autoscaling between "
                        "--min-replicas and --max-replicas)")
    p.add_argument("--min-replicas", type=int, default=d.min_replicas, help="with --replicas auto")
    p.add_argument("--max-replicas", type=int, default=d.max_replicas, help="with --replicas auto")
    p.add_argument("--target-ongoing-requests", type=float, default=d.target_ongoing_requests,
                   help="with --replicas auto: requests in flight per replica that autoscaling aims at")
    p.add_argument("--max-replicas-per-node", type=int, help="at most this many replicas on one node (1: spread)")
    p.add_argument("--max-models-per-replica", type=int, default=d.max_models_per_replica,
                   help="models one replica holds at once with several --engines (least recently used evicted)")
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
                   help="ONNX graph precision (default fp16 where the engines run on a GPU and the export has it, "
                        "else fp32; int8: CPU flow step, if exported)")
    p.add_argument("--name", default=d.app_name, help="Ray Serve application name")
    p.add_argument("--route-prefix", default=d.route_prefix, help="URL prefix of the service")
    p.add_argument("--api-key-file", type=Path,
                   help="require Authorization: Bearer KEY on /v1/* (one key per line; re-read on SIGHUP)")
    p.add_argument("--metrics-public", action="store_true", help="with --api-key-file: /metrics needs no key")
    p.add_argument("--no-warmup", action="store_true",
                   help="report ready without the warm-up generation of each replica (faster start, slower first answer)")
    p.add_argument("-v", "--verbose", action="store_true", help="Ray's own INFO logs too")
    return p


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> tp.NoReturn:  # one line, exit 2 (argparse prints the whole usage)
        self.exit(2, f"jasco-serve: error: {message} (see jasco-serve --help)\n")


def _replicas(text: str) -> tp.Union[int, str]:
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got {text!r}") from None


def config_from_args(a: argparse.Namespace) -> ServeConfig:
    engines = [e.resolve() for e in a.engines]
    return ServeConfig(
        engines=engines[0], more_engines=tuple(engines[1:]), host=a.host, port=a.port, replicas=a.replicas,
        min_replicas=a.min_replicas, max_replicas=a.max_replicas, target_ongoing_requests=a.target_ongoing_requests,
        max_replicas_per_node=a.max_replicas_per_node, max_models_per_replica=a.max_models_per_replica,
        gpus_per_replica=a.gpus_per_replica, cpus_per_replica=a.cpus_per_replica,
        max_batch_prompts=a.max_batch_prompts, batch_wait_ms=a.batch_wait_ms, max_queued=a.max_queued,
        request_timeout=a.request_timeout, max_upload_mb=a.max_upload_mb, address=a.address, backend=a.backend,
        provider=a.provider, precision=a.precision, app_name=a.name, route_prefix=a.route_prefix,
        api_key_file=a.api_key_file.resolve() if a.api_key_file else None, metrics_public=a.metrics_public,
        warmup=not a.no_warmup,
    ).check()


def _line(message: tp.Any) -> str:
    """A start-up error as one line (paths kept whole)."""
    return bounded(str(message), limit=1000, word=1000)


class _Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Stop:
    """SIGTERM / SIGINT → stop; a second signal skips the drain. Before the service is ready a signal
    interrupts the start-up (``raising``), so nothing waits for Ray to finish starting."""

    def __init__(self) -> None:
        self.event, self.count, self.raising, self.signum = threading.Event(), 0, True, 0
        self.hup = threading.Event()

    def __call__(self, signum: int, frame: tp.Any) -> None:
        if signum == signal.SIGHUP:
            self.hup.set()
            return
        self.count += 1
        self.signum = self.signum or signum
        self.event.set()
        if self.raising:
            raise _Interrupted(signum)

    def install(self) -> tp.Dict[int, tp.Any]:
        return {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def drain(config: ServeConfig, poll_s: float = 0.2, grace_s: float = 1.0, stop: tp.Optional[_Stop] = None) -> int:
    """Refuse new generations, wait until the admitted ones are answered (at most the request timeout).
    Returns the number still in flight when it gave up (0 when drained)."""
    from ray import serve

    ingress = serve.get_deployment_handle("JascoIngress", app_name=config.app_name)
    try:  # every call bounded: a Ray that stopped answering (its processes killed) must not hang the exit
        left = ingress.begin_drain.remote().result(timeout_s=CONTROL_TIMEOUT_S)
        deadline = time.monotonic() + config.request_timeout + 5
        while left and time.monotonic() < deadline and (stop is None or stop.count < 2):
            time.sleep(poll_s)
            left = ingress.in_flight.remote().result(timeout_s=CONTROL_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 — stopping anyway
        print(f"jasco-serve: Ray did not answer the drain ({type(exc).__name__}); stopping", file=sys.stderr, flush=True)
        return EXIT_OK
    time.sleep(grace_s)  # let the proxy finish sending the last answers
    return left


def _quiet_logging(verbose: bool) -> int:
    """Ray's driver-side loggers at WARNING (INFO with --verbose); returns the level for ``ray.init``."""
    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    return level


def _deploy_failure(config: ServeConfig, exc: BaseException) -> str:
    """Why the application did not start: the last line of the failing deployment's message (its exception)."""
    from ray import serve

    try:
        app = serve.status().applications.get(config.app_name)
        for dep in (app.deployments.values() if app else ()):
            lines = [ln.strip() for ln in (dep.message or "").splitlines() if ln.strip()]
            if lines and str(dep.status).endswith("UNHEALTHY"):
                return lines[-1]
    except Exception:  # noqa: BLE001 — the reason is a nicety; the failure is reported anyway
        pass
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def serve_forever(config: ServeConfig, verbose: bool = False) -> int:
    stop = _Stop()
    previous = stop.install()  # a signal during the start-up stops it at once (exit 130 / 143)
    temp_dir: tp.Optional[str] = None
    started = False
    front: tp.Any = None  # a StartupFront: JSON 503 on the port until the application is ready
    try:
        import ray
        from ray import serve

        from .app import build_app
        from .starting import StartupFront, starting_app

        level = _quiet_logging(verbose)
        if config.address:
            ray.init(address=config.address, log_to_driver=verbose, logging_level=level)
        else:  # a private local instance: every port on loopback (see loopback.py), its session folder ours
            front = StartupFront.open(config.host, config.port)
            _become_subreaper()
            temp_dir = config.ray_temp_dir or tempfile.mkdtemp(prefix="jasco-ray-", dir=_short_temp_root())
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=verbose,
                     logging_level=level, _temp_dir=temp_dir)
        started = True
        stop.install()  # again: ray.init installs its own handlers
        if config.address:
            preflight.check_cluster(config, ray.cluster_resources())
        serve.start(http_options={"host": config.host, "port": config.port})
        if front is None:  # JSON 503 on the route until the real application (same name) replaces it
            serve.run(starting_app(), name=config.app_name, route_prefix=config.route_prefix)
        try:
            serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
        except RuntimeError as exc:  # a replica's constructor failed
            print(f"jasco-serve: error: the application did not start: {_line(_deploy_failure(config, exc))}",
                  file=sys.stderr)
            return EXIT_FAILED
        if front is not None:
            front.hand_over()  # the proxy answers from here on
        lo, hi = config.replica_counts
        replicas = f"{lo}" if lo == hi else f"{lo}–{hi} (autoscaling)"
        url = f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}/"
        print(f"jasco-serve: ready at {url} ({replicas} replica(s), {len(config.model_names)} model(s); "
              f"POST {url}v1/generate)", flush=True)
        stop.raising = False
        if stop.count:  # a signal between the start-up and here
            raise _Interrupted(stop.signum)
        ingress = serve.get_deployment_handle("JascoIngress", app_name=config.app_name)
        while not stop.event.wait(0.5):
            if stop.hup.is_set():
                stop.hup.clear()
                try:
                    answer = ingress.reload_api_keys.remote().result(timeout_s=CONTROL_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001 — the service keeps running with the keys it has
                    answer = f"error: the ingress did not answer ({type(exc).__name__})"
                print(f"jasco-serve: SIGHUP: {answer}", flush=True)
        print("jasco-serve: stopping — draining in-flight requests", flush=True)
        left = drain(config, stop=stop)
        if left:
            print(f"jasco-serve: {left} request(s) still in flight at the deadline", file=sys.stderr, flush=True)
        return EXIT_OK
    except (_Interrupted, SystemExit) as exc:
        # SystemExit: the signal came while ray.init's own SIGTERM handler (sys.exit(signum)) was installed
        signum = exc.signum if isinstance(exc, _Interrupted) else exc.code
        if isinstance(exc, SystemExit) and not (stop.raising and signum in (signal.SIGTERM, signal.SIGINT)):
            raise
        stop.raising = False
        name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
        print(f"jasco-serve: {name} during start-up; stopped", file=sys.stderr, flush=True)
        return 128 + int(signum)
    except JascoError as exc:
        print(f"jasco-serve: error: {_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        stop.raising = False
        if front is not None:
            front.close()
        _shutdown(config, started, local=temp_dir is not None)
        for s, h in previous.items():
            signal.signal(s, h)
        if temp_dir is not None and config.ray_temp_dir is None:  # only the folder made here: never a given one
            _remove_tree(temp_dir)


def _become_subreaper() -> None:
    """Linux ``prctl(PR_SET_CHILD_SUBREAPER)``: a Ray process whose parent (the raylet) died first is re-parented
    to this process instead of init, so :func:`_descendants` still finds it and it can be stopped and reaped."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass  # not Linux: the processes recorded before ray.shutdown() are still stopped


def _remove_tree(path: str, tries: int = 20) -> None:
    """Remove the local instance's session folder; retried briefly while the last log writes of stopped
    processes land (a file created during a removal makes it fail with "directory not empty")."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.1)


def _short_temp_root() -> str:
    """$TMPDIR, or /tmp where $TMPDIR is too long for the Unix socket paths Ray puts under it (107 bytes)."""
    root = tempfile.gettempdir()
    return root if len(root) <= 40 else "/tmp"


def _shutdown(config: ServeConfig, started: bool, local: bool = False) -> None:
    """Remove the application; stop the local instance (its Serve controller goes with it: no
    ``serve.shutdown()``, whose controller kill logs a spurious "graceful_shutdown failed"), and with it
    every process it started (:func:`_reap`)."""
    import ray
    from ray import serve

    ours = _descendants() if local else []  # before ray.shutdown(): the raylet's children are still its own

    if started:
        try:
            # on a cluster: leave its other applications alone; locally the instance goes down next anyway
            serve.delete(config.app_name, _blocking=bool(config.address))
        except Exception as exc:  # noqa: BLE001 — shutting down anyway
            logger.warning("serve delete: %s", bounded(str(exc)))
    if ray.is_initialized() or local:  # locally also after an interrupted ray.init: it stops what it started
        ray.shutdown()
    if local:
        _reap(ours + _descendants())
        for _ in range(3):  # a worker the raylet started while it was being stopped (re-parented here: subreaper)
            rest = _descendants()
            if not rest:
                break
            _reap(rest)


def _descendants() -> tp.List[tp.Any]:
    """The processes below this one (``psutil.Process``; Ray ships psutil), [] without psutil."""
    try:
        import psutil

        return psutil.Process().children(recursive=True)
    except Exception:  # noqa: BLE001 — nothing to reap is better than a failed exit
        return []


def _reap(procs: tp.Sequence[tp.Any], grace_s: float = REAP_GRACE_S) -> None:
    """SIGTERM the processes of the local instance that outlived ``ray.shutdown()`` (the raylet's dashboard
    and runtime-env agents notice its end only a minute later), SIGKILL the ones left after ``grace_s``."""
    try:
        import psutil

        alive = [p for p in {p.pid: p for p in procs}.values() if p.is_running()]
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(alive, timeout=grace_s)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=grace_s)
    except Exception as exc:  # noqa: BLE001 — stopping anyway
        logger.warning("stopping Ray's processes: %s", bounded(str(exc)))


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    a = parser().parse_args(argv)
    try:
        config = config_from_args(a)
        preflight.check_all(config)  # folders, keys, port, host, provider, resources: before Ray starts
    except JascoError as exc:
        print(f"jasco-serve: error: {_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        print('jasco-serve: error: Ray Serve is not installed; `pip install "jasco-trt[serve]"` (or "ray[serve]")',
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if not config.address:
        _enter_loopback(config, reexec=argv is None)
    return serve_forever(config, verbose=a.verbose)


def _enter_loopback(config: ServeConfig, reexec: bool) -> None:
    """Environment of the local Ray instance (:mod:`.loopback`); from the command line, this process restarts
    itself once with the shim loaded, so the Ray worker inside it binds loopback too."""
    shim, why = (Path(os.environ[loopback.ACTIVE]), "") if loopback.shim_loaded() else loopback.build_shim()
    if shim is None:
        print(f"jasco-serve: warning: {why}: Ray's internal ports listen on every interface; install cc, "
              "or firewall this machine", file=sys.stderr, flush=True)
    keep = config.port if config.host not in ("127.0.0.1", "localhost", "::1") else None
    env = loopback.local_ray_env(shim, keep)
    os.environ.update(env)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray already imported (in-process use): it read the variable at import
        constants.ENABLE_RAY_CLUSTER = False
    if shim is not None and reexec and not loopback.shim_loaded():
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, loopback.reexec_argv())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
