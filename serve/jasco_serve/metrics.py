"""Prometheus metrics of the service (``GET /metrics``), kept by the ingress.

``jasco_requests_total{status}`` counts every answered ``/v1/generate`` by HTTP status;
``jasco_queue_depth`` is the number of admitted generation requests not yet answered (waiting for a batch
or generating — what ``--max-queued`` bounds); ``jasco_batch_prompts`` observes each ODE solve once with its
number of prompts; ``jasco_request_latency_seconds`` is arrival → answer of successful generations;
``jasco_key_requests_total{key_id, status}`` counts the ``/v1/*`` requests of each API key by the key's id
(:func:`jasco_serve.auth.key_id`, never the key; ``key_id="none"`` for refused requests without a valid key);
``jasco_model_requests_total{model}`` the generations asked of each model.
"""
from __future__ import annotations

import collections
import math
import typing as tp

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # no *_created series: they say nothing a scraper needs here

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    def __init__(self, recent: int = 64):
        self.registry = CollectorRegistry()
        self.requests = Counter("jasco_requests", "Answered /v1/generate requests by HTTP status", ["status"],
                                registry=self.registry)
        self.queue_depth = Gauge("jasco_queue_depth", "Admitted generation requests not yet answered",
                                 registry=self.registry)
        self.batch_prompts = Histogram("jasco_batch_prompts", "Prompts per ODE solve", buckets=BATCH_BUCKETS,
                                       registry=self.registry)
        self.latency = Histogram("jasco_request_latency_seconds", "Arrival to answer of successful generations",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.key_requests = Counter("jasco_key_requests", "/v1/* requests by API key id (not the key) and status",
                                    ["key_id", "status"], registry=self.registry)
        self.model_requests = Counter("jasco_model_requests", "Answered /v1/generate requests by model",
                                      ["model"], registry=self.registry)
        self._solves: tp.Deque[str] = collections.deque(maxlen=4096)
        self._seen: tp.Set[str] = set()
        self._recent: tp.Deque[float] = collections.deque(maxlen=recent)

    def answered(self, status: int, model: tp.Optional[str] = None) -> None:
        self.requests.labels(status=str(status)).inc()
        if model is not None:
            self.model_requests.labels(model=model).inc()

    def keyed(self, key_id: tp.Optional[str], status: int) -> None:
        self.key_requests.labels(key_id=key_id or "none", status=str(status)).inc()

    def generated(self, latency_s: float, solve_id: str, solve_prompts: int) -> None:
        """A successful generation; its solve is counted once however many requests it answered."""
        self.latency.observe(latency_s)
        self._recent.append(latency_s)
        if solve_id not in self._seen:
            if len(self._solves) == self._solves.maxlen:
                self._seen.discard(self._solves[0])
            self._solves.append(solve_id)
            self._seen.add(solve_id)
            self.batch_prompts.observe(solve_prompts)

    def retry_after_s(self) -> int:
        """A hint for ``Retry-After``: the median latency of recent generations, at least 1 s."""
        if not self._recent:
            return 1
        return max(1, math.ceil(sorted(self._recent)[len(self._recent) // 2]))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
