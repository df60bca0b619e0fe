"""``ServeConfig``: every setting of the service, checked before Ray starts."""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass
from pathlib import Path

from jasco_runtime.errors import InputError

PROVIDERS = ("cpu", "cuda", "tensorrt")


@dataclass
class ServeConfig:
    engines: Path
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1  # generator replicas (each loads the engines once)
    gpus_per_replica: float = 0.0  # 0.5 → two replicas share a GPU
    cpus_per_replica: float = 1.0  # Ray CPUs reserved per generator replica
    max_batch_prompts: int = 8  # prompts in one ODE solve
    batch_wait_ms: float = 20.0  # how long a replica waits to fill a batch
    max_queued: int = 64  # generation requests admitted at once (waiting or generating); more → 503
    request_timeout: float = 300.0  # seconds from arrival to answer; then 504
    max_upload_mb: float = 20.0  # request body limit; more → 413
    address: tp.Optional[str] = None  # Ray cluster to join; None: a local Ray instance
    backend: str = "auto"
    provider: tp.Optional[str] = None
    precision: tp.Optional[str] = None
    app_name: str = "jasco"
    route_prefix: str = "/"
    warmup: bool = True  # one generation per replica before it reports ready

    def check(self) -> "ServeConfig":
        """Raise :class:`InputError` on the first bad setting (one line: the problem and the fix)."""
        def positive(name: str, value: float, integer: bool = False) -> None:
            if isinstance(value, bool) or (integer and int(value) != value) or not value > 0:
                raise InputError(f"--{name.replace('_', '-')} must be a positive {'integer' if integer else 'number'}, got {value}")

        for name in ("replicas", "max_batch_prompts", "max_queued"):
            positive(name, getattr(self, name), integer=True)
        for name in ("request_timeout", "max_upload_mb"):
            positive(name, getattr(self, name))
        if not 0 < self.port < 65536:
            raise InputError(f"--port must be between 1 and 65535, got {self.port}")
        for name in ("gpus_per_replica", "cpus_per_replica", "batch_wait_ms"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")
        if self.gpus_per_replica > 1 and self.gpus_per_replica != int(self.gpus_per_replica):
            raise InputError(f"--gpus-per-replica above 1 must be a whole number, got {self.gpus_per_replica}")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise InputError(f"unknown --provider {self.provider!r}; use one of {', '.join(PROVIDERS)}")
        if not self.route_prefix.startswith("/"):
            raise InputError(f"the route prefix must start with '/', got {self.route_prefix!r}")
        return self

    @property
    def providers(self) -> tp.Optional[tp.List[str]]:
        return [self.provider] if self.provider else None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
