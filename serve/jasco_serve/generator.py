"""The generator deployment: a Ray Serve replica that holds the engines and batches requests.

Each replica opens the export folder once (:meth:`JascoPipeline.from_dir`), runs one warm-up generation,
then collects concurrent requests with ``@serve.batch`` (up to ``max_batch_prompts``, waiting at most
``batch_wait_ms``) and hands each collected batch to :func:`jasco_runtime.batching.group_requests` /
:func:`~jasco_runtime.batching.solve_group`: compatible requests share one ODE solve, the others run in
their own solve within the same batch, so nothing waits for more than one batch. The engines run in a
worker thread, so the replica keeps collecting the next batch while one is generating.

Several models (``--engines A --engines B``): the default (first) model is loaded and warmed up in the
constructor and stays; the others are loaded on first use through Ray Serve model multiplexing
(``serve.multiplexed``: the router prefers replicas that hold the model; at most
``max_models_per_replica - 1`` of them per replica besides the default, least recently used evicted — an
evicted model is closed once its running solves are done). A collected batch is grouped per model first.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import typing as tp
import uuid
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from jasco_runtime.batching import group_requests, solve_group
from jasco_runtime.conditioning import PreparedRequest
from jasco_runtime.errors import InputError, JascoError, first_line
from jasco_runtime.generation import Cancelled
from jasco_runtime.request import GenerationRequest

from .config import ServeConfig

logger = logging.getLogger("jasco_serve")


@dataclass
class Clip:
    """One request's answer from a replica."""

    audio: np.ndarray  # [channels, samples] float32
    sample_rate: int
    nfe: int
    timings: tp.Dict[str, float] = field(default_factory=dict)
    solve_id: str = ""  # requests of one ODE solve share it
    solve_prompts: int = 1
    replica: str = ""  # the replica that generated it (Ray Serve's replica id)


@dataclass
class Failure:
    """A request the replica could not answer: ``status`` 400 (bad input) or 500 (the generation failed)."""

    status: int
    message: str


Outcome = tp.Union[Clip, Failure]


class LoadedModel:
    """One model's pipeline on a replica; closed when evicted (Ray Serve calls ``__del__``) and unused."""

    def __init__(self, name: str, pipe: tp.Any, warmup_s: tp.Optional[float]):
        self.name, self.pipe, self.warmup_s = name, pipe, warmup_s
        self.users, self.retired, self._lock = 0, False, threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self.users += 1

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            close = self.retired and self.users == 0
        if close:
            self._close()

    def _close(self) -> None:
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            pipe.close()

    def __del__(self) -> None:
        with self._lock:
            self.retired = True
            close = self.users == 0
        if close:
            self._close()


@dataclass
class _Job:
    """A request in a batch, for one model; ``cancelled`` is set when its caller goes away (the ingress timed out
    and cancelled the call, or the client disconnected): its solve stops at the next vector-field evaluation."""

    model: LoadedModel
    request: PreparedRequest
    cancelled: bool = False


@serve.deployment(name="JascoGenerator")
class JascoGenerator:
    def __init__(self, config: ServeConfig):
        self.config = config
        if not config.model_names:
            config.resolve_models()
        self._batched.set_max_batch_size(config.max_batch_prompts)
        self._batched.set_batch_wait_timeout_s(config.batch_wait_ms / 1000.0)
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 — outside a replica (unit use)
            self.replica_id = ""
        self.default = self._load(config.default_model)
        self.pipe, self.warmup_s = self.default.pipe, self.default.warmup_s

        async def load(model_id: str) -> LoadedModel:
            return await asyncio.to_thread(self._load, model_id)

        # the default model stays loaded; the others share the remaining room (at least one)
        self._load_fn = load
        self._get_model = serve.multiplexed(max_num_models_per_replica=max(config.max_models_per_replica - 1, 1))(load)

    def _load(self, name: str) -> LoadedModel:
        from jasco_runtime import JascoPipeline

        c = self.config
        pipe = JascoPipeline.from_dir(c.model_names[name], backend=c.backend, providers=c.providers, precision=c.precision)
        warmup_s = None
        if c.warmup:
            start = time.perf_counter()
            warm = GenerationRequest([""], solver="euler", steps=1, seed=0).resolved(pipe.manifest.defaults)
            pipe.run(warm, progress=False)
            warmup_s = time.perf_counter() - start
        logger.info("model %s loaded", name)
        return LoadedModel(name, pipe, warmup_s)

    # -- calls from the ingress ---------------------------------------------------------------------
    async def generate(self, req: PreparedRequest, model: tp.Optional[str] = None) -> Outcome:
        name = model or self.config.default_model
        if name == self.config.default_model:
            loaded = self.default
        else:
            try:
                loaded = await self._get_model(name)
            except Exception as exc:  # noqa: BLE001 — a folder that stopped loading: answer, keep serving
                logger.error("loading model %s failed: %s", name, first_line(exc)[:300])
                return Failure(500, f"model {name!r} could not be loaded ({type(exc).__name__}); see the server log")
        loaded.acquire()
        job = _Job(loaded, req)
        try:
            return await self._batched(job)
        except asyncio.CancelledError:  # Ray Serve cancels the call when the ingress gives up on it
            job.cancelled = True
            raise
        finally:
            loaded.release()

    def describe(self) -> tp.Dict[str, tp.Any]:
        """What this replica runs for the default model (for ``GET /v1/models``): the pipeline's one resolution."""
        r = self.pipe.resolution.to_dict()
        return {"backend": r["backend"], "precision": r["precision"], "providers": r["providers"],
                "device": r["device"], "warmup_s": self.warmup_s}

    def loaded_models(self) -> tp.List[str]:
        """The models this replica holds now: the default, then the multiplexed ones (least recent first)."""
        wrapper = getattr(self._load_fn, "__serve_multiplex_wrapper", None)
        return [self.config.default_model, *(list(wrapper.models) if wrapper is not None else [])]

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def ready(self) -> bool:
        return True  # the constructor loaded the engines and ran the warm-up

    # -- batching -----------------------------------------------------------------------------------
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # both reset from the config in __init__
    async def _batched(self, jobs: tp.List[_Job]) -> tp.List[Outcome]:
        return await asyncio.to_thread(self._run_jobs, jobs)

    def _run_jobs(self, jobs: tp.Sequence[_Job]) -> tp.List[Outcome]:
        """One collected batch: each model's requests are batched among themselves."""
        out: tp.List[Outcome] = [Failure(500, "not run")] * len(jobs)
        by_model: tp.Dict[int, tp.List[int]] = {}
        for i, job in enumerate(jobs):
            by_model.setdefault(id(job.model), []).append(i)
        for idx in by_model.values():
            pipe = jobs[idx[0]].model.pipe
            if pipe is None:  # evicted and closed before this batch ran (the ingress answers 500: retry)
                for i in idx:
                    out[i] = Failure(500, f"model {jobs[i].model.name!r} was unloaded meanwhile; retry")
                continue
            for i, res in zip(idx, self._run(pipe, [jobs[i] for i in idx])):
                out[i] = res
        return out

    def _run(self, pipe: tp.Any, jobs: tp.Sequence[_Job]) -> tp.List[Outcome]:
        reqs = [j.request for j in jobs]
        out: tp.List[Outcome] = [Failure(500, "not run")] * len(reqs)
        for group in group_requests(pipe, reqs, self.config.max_batch_prompts):
            solve_id = uuid.uuid4().hex
            members = [jobs[i] for i in group]
            if all(m.cancelled for m in members):  # gone before its solve started: the replica moves on
                for i in group:
                    out[i] = Failure(499, "cancelled")
                continue
            try:
                results = solve_group(pipe, [reqs[i] for i in group],
                                      cancel=lambda members=members: all(m.cancelled for m in members))
            except Exception as exc:  # an engine failure: answer each request of the solve, keep serving
                logger.exception("solve of %d request(s) failed", len(group))
                results = [JascoError(f"the generation failed ({type(exc).__name__}: {first_line(exc)})")] * len(group)
            prompts = sum(reqs[i].batch_size for i in group)
            for i, res in zip(group, results):
                if isinstance(res, Cancelled):
                    out[i] = Failure(499, "cancelled")
                elif isinstance(res, JascoError):
                    out[i] = Failure(400 if isinstance(res, InputError) else 500, first_line(res))
                else:
                    out[i] = Clip(res.audio[0], res.sample_rate, res.nfe, dict(res.timings), solve_id, prompts,
                                  self.replica_id)
        return out


