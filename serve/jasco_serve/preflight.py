"""Start-up checks of jasco-serve that run before Ray starts (each failure: one line, exit 2).

Ray itself reports these late or not at all: a busy port or an address that is not the machine's is a 40-line
traceback from the HTTP proxy, a provider that is not installed or a precision the folder lacks fails inside
a replica constructor ("the application did not start"), and more GPUs (or CPUs) than the machine has leave
the replicas pending forever. With ``--address`` the cluster's resources are checked once Ray is connected
(:func:`check_cluster`), before anything is deployed.
"""
from __future__ import annotations

import errno
import math
import os
import socket
import typing as tp

from jasco_runtime.errors import InputError
from jasco_runtime.export_folder import ArtifactKey, ExportFolder

from .auth import read_key_file
from .config import ServeConfig

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


def check_host_port(host: str, port: int) -> None:
    """The HTTP address can be bound here: the host is one of this machine's addresses, the port is free."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise InputError(f"--host {host!r} is not an IP address or a host name this machine resolves; "
                         "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"port {port} on {host} is already in use (another jasco-serve?); pick another "
                                 "--port or stop the program listening there") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InputError(f"--host {host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 or one "
                                 "of its interface addresses") from None
            if exc.errno == errno.EACCES:
                raise InputError(f"port {port} needs privileges to listen on; use a port above 1023") from None
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --host/--port") from None


def check_folders(config: ServeConfig) -> None:
    """Every model folder opens and has what the settings ask for (precision, TensorRT engines)."""
    for path in config.folders:
        folder = ExportFolder.open(path)
        names = folder.runtime_graphs()
        if config.backend == "tensorrt":
            missing = [n for n in names if not folder.has(folder.resolve(n, "tensorrt", "fp16"))]
            if missing:
                raise InputError(f"{path} has no TensorRT engines ({', '.join(missing)}); build them on this machine "
                                 f"with `jasco-run build-engines {path}` or use --backend onnxruntime")
        elif config.precision is not None and not folder.has(ArtifactKey("flow_step", config.precision, "onnx")):
            have = sorted(a.key.precision for a in folder.artifacts()
                          if a.key.graph == "flow_step" and a.key.backend == "onnx")
            raise InputError(f"{path} has no {config.precision} flow_step graph (has: {', '.join(have)}); re-export "
                             f"with `jasco-export --precision fp32,{config.precision}` or pick another --precision")


def check_provider(config: ServeConfig) -> None:
    """An explicit ``--provider`` is one ONNX Runtime has here (ONNX Runtime would otherwise fail per replica)."""
    if config.provider is None or config.backend == "tensorrt":
        return
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("onnxruntime is not installed; `pip install onnxruntime` (or onnxruntime-gpu)") from None
    available = ort.get_available_providers()
    if ORT_PROVIDERS[config.provider] not in available:
        raise InputError(f"--provider {config.provider}: ONNX Runtime here has no {ORT_PROVIDERS[config.provider]} "
                         f"(available: {', '.join(available)}); install onnxruntime-gpu, or drop --provider")


def local_gpus() -> int:
    """GPUs a local Ray instance would see (Ray's own count: CUDA_VISIBLE_DEVICES, else NVML)."""
    try:
        from ray._private.accelerators import NvidiaGPUAcceleratorManager

        visible = NvidiaGPUAcceleratorManager.get_current_process_visible_accelerator_ids()
        count = NvidiaGPUAcceleratorManager.get_current_node_num_accelerators()
        return min(count, len(visible)) if visible is not None else count
    except Exception:  # noqa: BLE001 — a private Ray API: fall back to what CUDA_VISIBLE_DEVICES says
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return len([d for d in visible.split(",") if d.strip()]) if visible else 0


def check_resources(config: ServeConfig, gpus: float, cpus: float, where: str) -> None:
    """The replicas fit (at least ``--min-replicas`` of them): otherwise Ray keeps them pending forever."""
    fewest, _ = config.replica_counts
    need_gpus = fewest * config.gpus_per_replica
    if need_gpus > 0 and (gpus <= 0 or need_gpus > gpus + 1e-9):
        raise InputError(f"{fewest} replica(s) × --gpus-per-replica {config.gpus_per_replica:g} need "
                         f"{math.ceil(need_gpus - 1e-9)} GPU(s), {where} has {gpus:g}; lower --replicas or "
                         "--gpus-per-replica (0: run on the CPU)")
    need_cpus = fewest * config.cpus_per_replica
    if need_cpus > cpus + 1e-9:
        raise InputError(f"{fewest} replica(s) × --cpus-per-replica {config.cpus_per_replica:g} need {need_cpus:g} "
                         f"CPUs, {where} has {cpus:g}; lower --replicas or --cpus-per-replica")


def check_cluster(config: ServeConfig, resources: tp.Mapping[str, float]) -> None:
    """After ``ray.init(address=...)``: the cluster has room for the replicas."""
    check_resources(config, float(resources.get("GPU", 0)), float(resources.get("CPU", 0)), "the Ray cluster")


def check_all(config: ServeConfig) -> None:
    """Everything that can be known before Ray starts; raises :class:`InputError` on the first problem."""
    config.resolve_models()
    check_folders(config)
    if config.api_key_file is not None:
        read_key_file(config.api_key_file)
    if config.address:
        return  # the HTTP proxy, the providers and the GPUs are the cluster nodes'
    check_host_port(config.host, config.port)
    check_provider(config)
    check_resources(config, local_gpus(), float(os.cpu_count() or 1), "this machine")
