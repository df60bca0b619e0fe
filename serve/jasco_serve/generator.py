"""The generator deployment: a Ray Serve replica that holds the engines and batches requests.

Each replica opens the export folder once (:meth:`JascoPipeline.from_dir`), runs one warm-up generation,
then collects concurrent requests with ``@serve.batch`` (up to ``max_batch_prompts``, waiting at most
``batch_wait_ms``) and hands each collected batch to :func:`jasco_runtime.batching.group_requests` /
:func:`~jasco_runtime.batching.solve_group`: compatible requests share one ODE solve, the others run in
their own solve within the same batch, so nothing waits for more than one batch. The engines run in a
worker thread, so the replica keeps collecting the next batch while one is generating.
"""
from __future__ import annotations

import asyncio
import logging
import time
import typing as tp
import uuid
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from jasco_runtime.batching import group_requests, solve_group
from jasco_runtime.conditioning import PreparedRequest
from jasco_runtime.errors import InputError, JascoError
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


@dataclass
class Failure:
    """A request the replica could not answer: ``status`` 400 (bad input) or 500 (the generation failed)."""

    status: int
    message: str


Outcome = tp.Union[Clip, Failure]


@dataclass
class _Pending:
    """A request in a batch; ``cancelled`` is set when its caller goes away (the ingress timed out and cancelled
    the call, or the client disconnected): its solve stops at the next vector-field evaluation."""

    request: PreparedRequest
    cancelled: bool = False


@serve.deployment(name="JascoGenerator")
class JascoGenerator:
    def __init__(self, config: ServeConfig):
        from jasco_runtime import JascoPipeline

        self.config = config
        self.pipe = JascoPipeline.from_dir(config.engines, backend=config.backend, providers=config.providers,
                                           precision=config.precision)
        self._batched.set_max_batch_size(config.max_batch_prompts)
        self._batched.set_batch_wait_timeout_s(config.batch_wait_ms / 1000.0)
        self.warmup_s = None
        if config.warmup:
            start = time.perf_counter()
            warm = GenerationRequest([""], solver="euler", steps=1, seed=0).resolved(self.pipe.manifest.defaults)
            self.pipe.run(warm, progress=False)
            self.warmup_s = time.perf_counter() - start

    # -- calls from the ingress ---------------------------------------------------------------------
    async def generate(self, req: PreparedRequest) -> Outcome:
        pending = _Pending(req)
        try:
            return await self._batched(pending)
        except asyncio.CancelledError:  # Ray Serve cancels the call when the ingress gives up on it
            pending.cancelled = True
            raise

    def describe(self) -> tp.Dict[str, tp.Any]:
        """What this replica runs (for ``GET /v1/models``): the pipeline's one resolution, not a guess."""
        r = self.pipe.resolution.to_dict()
        return {"backend": r["backend"], "precision": r["precision"], "providers": r["providers"],
                "device": r["device"], "warmup_s": self.warmup_s}

    def ready(self) -> bool:
        return True  # the constructor loaded the engines and ran the warm-up

    # -- batching -----------------------------------------------------------------------------------
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # both reset from the config in __init__
    async def _batched(self, pending: tp.List[_Pending]) -> tp.List[Outcome]:
        return await asyncio.to_thread(self._run, pending)

    def _run(self, pending: tp.Sequence[_Pending]) -> tp.List[Outcome]:
        reqs = [p.request for p in pending]
        out: tp.List[Outcome] = [Failure(500, "not run")] * len(reqs)
        for group in group_requests(self.pipe, reqs, self.config.max_batch_prompts):
            solve_id = uuid.uuid4().hex
            members = [pending[i] for i in group]
            if all(m.cancelled for m in members):  # gone before its solve started: the replica moves on
                for i in group:
                    out[i] = Failure(499, "cancelled")
                continue
            try:
                results = solve_group(self.pipe, [reqs[i] for i in group],
                                      cancel=lambda members=members: all(m.cancelled for m in members))
            except Exception as exc:  # an engine failure: answer each request of the solve, keep serving
                logger.exception("solve of %d request(s) failed", len(group))
                results = [JascoError(f"the generation failed ({type(exc).__name__}: {_first_line(exc)})")] * len(group)
            prompts = sum(reqs[i].batch_size for i in group)
            for i, res in zip(group, results):
                if isinstance(res, Cancelled):
                    out[i] = Failure(499, "cancelled")
                elif isinstance(res, JascoError):
                    out[i] = Failure(400 if isinstance(res, InputError) else 500, _first_line(res))
                else:
                    out[i] = Clip(res.audio[0], res.sample_rate, res.nfe, dict(res.timings), solve_id, prompts)
        return out


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
