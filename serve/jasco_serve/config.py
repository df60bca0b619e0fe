"""``ServeConfig``: every setting of the service, checked before Ray starts."""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from jasco_runtime.errors import InputError

PROVIDERS = ("cpu", "cuda", "tensorrt")


AUTO = "auto"


@dataclass
class ServeConfig:
    engines: Path  # the default model's export folder
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: tp.Union[int, str] = 1  # generator replicas (each loads the engines once), or "auto" (autoscaling)
    min_replicas: int = 1  # with replicas="auto"
    max_replicas: int = 4  # with replicas="auto"
    target_ongoing_requests: float = 2.0  # with replicas="auto": requests per replica Ray Serve scales towards
    max_replicas_per_node: tp.Optional[int] = None  # 1: spread the replicas over the nodes
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
    more_engines: tp.Tuple[Path, ...] = ()  # further models (``--engines A --engines B``), chosen by "model"
    max_models_per_replica: int = 2  # models a replica holds at once (least recently used evicted)
    api_key_file: tp.Optional[Path] = None  # one key per line; None: no keys asked
    metrics_public: bool = False  # /metrics without a key even when keys are set
    ray_temp_dir: tp.Optional[str] = None  # the local instance's session folder root (default: a new temp folder, removed at exit; a given one is kept)
    model_names: tp.Dict[str, Path] = field(default_factory=dict)  # filled by resolve_models()

    def check(self) -> "ServeConfig":
        """Raise :class:`InputError` on the first bad setting (one line: the problem and the fix)."""
        def positive(name: str, value: float, integer: bool = False) -> None:
            if isinstance(value, bool) or (integer and int(value) != value) or not value > 0:
                raise InputError(f"--{name.replace('_', '-')} must be a positive {'integer' if integer else 'number'}, got {value}")

        if self.replicas != AUTO:
            if isinstance(self.replicas, str):
                raise InputError(f"--replicas must be a positive integer or auto, got {self.replicas!r}")
            positive("replicas", self.replicas, integer=True)
        for name in ("max_batch_prompts", "max_queued", "max_models_per_replica", "min_replicas", "max_replicas"):
            positive(name, getattr(self, name), integer=True)
        if self.min_replicas > self.max_replicas:
            raise InputError(f"--min-replicas ({self.min_replicas}) is above --max-replicas ({self.max_replicas})")
        positive("target_ongoing_requests", self.target_ongoing_requests)
        if self.max_replicas_per_node is not None:
            positive("max_replicas_per_node", self.max_replicas_per_node, integer=True)
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
    def folders(self) -> tp.List[Path]:
        """Every model's export folder, the default first."""
        return [Path(self.engines), *map(Path, self.more_engines)]

    @property
    def default_model(self) -> str:
        return next(iter(self.model_names)) if self.model_names else ""

    def resolve_models(self) -> "ServeConfig":
        """Name each folder by its manifest's model id (the folder's name where two share an id): the names
        requests give as ``model``. Opens each manifest (a bad folder is an :class:`InputError`)."""
        from jasco_runtime.export_folder import ExportFolder

        names: tp.Dict[str, Path] = {}
        for path in self.folders:
            if Path(path).resolve() in [p.resolve() for p in names.values()]:
                raise InputError(f"--engines {path} is given twice; give each export folder once")
            folder = ExportFolder.open(path)
            folder.runtime_graphs()
            name = folder.model_id
            if name in names:
                name = path.name
            if name in names:
                raise InputError(f"two --engines folders are both named {name!r}; give each model its own folder name")
            names[name] = Path(path)
        self.model_names = names
        return self

    @property
    def replica_counts(self) -> tp.Tuple[int, int]:
        """(fewest, most) generator replicas."""
        if self.replicas == AUTO:
            return self.min_replicas, self.max_replicas
        return int(self.replicas), int(self.replicas)

    @property
    def providers(self) -> tp.Optional[tp.List[str]]:
        return [self.provider] if self.provider else None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
