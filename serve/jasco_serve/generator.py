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
from jasco_runtime.errors import InputError, JascoError, first_line
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
    async def generate(self, req: GenerationRequest) -> Outcome:
        return await self._batched(req)

    def describe(self) -> tp.Dict[str, tp.Any]:
        """What this replica runs (for ``GET /v1/models``)."""
        engine = self.pipe.engines["flow_step"]
        session = getattr(engine, "session", None)
        on_gpu = bool(getattr(engine, "on_gpu", False))
        # the precision JascoPipeline.from_dir picks when none is asked for: fp16 on a GPU if exported, else fp32
        has_fp16 = "fp16" in self.pipe.manifest.graphs["flow_step"].precisions
        precision = self.config.precision or ("fp16" if (on_gpu or self.pipe.backend == "tensorrt") and has_fp16 else "fp32")
        return {"backend": self.pipe.backend, "precision": precision,
                "providers": session.get_providers() if session is not None else None, "warmup_s": self.warmup_s}

    def ready(self) -> bool:
        return True  # the constructor loaded the engines and ran the warm-up

    # -- batching -----------------------------------------------------------------------------------
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # both reset from the config in __init__
    async def _batched(self, reqs: tp.List[GenerationRequest]) -> tp.List[Outcome]:
        return await asyncio.to_thread(self._run, reqs)

    def _run(self, reqs: tp.Sequence[GenerationRequest]) -> tp.List[Outcome]:
        out: tp.List[Outcome] = [Failure(500, "not run")] * len(reqs)
        for group in group_requests(self.pipe, reqs, self.config.max_batch_prompts):
            solve_id = uuid.uuid4().hex
            try:
                results = solve_group(self.pipe, [reqs[i] for i in group])
            except Exception as exc:  # an engine failure: answer each request of the solve, keep serving
                logger.exception("solve of %d request(s) failed", len(group))
                results = [JascoError(f"the generation failed ({type(exc).__name__}: {_first_line(exc)})")] * len(group)
            prompts = sum(len(reqs[i].prompts) for i in group)
            for i, res in zip(group, results):
                if isinstance(res, JascoError):
                    out[i] = Failure(400 if isinstance(res, InputError) else 500, _first_line(res))
                else:
                    out[i] = Clip(res.audio[0], res.sample_rate, res.nfe, dict(res.timings), solve_id, prompts)
        return out


_first_line = first_line  # the shared helper (jasco_runtime.errors)
