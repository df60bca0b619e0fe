"""jasco_serve — an HTTP service for JASCO on Ray Serve (``jasco-serve``).

Engines stay loaded in generator replicas; concurrent requests that can share an ODE solve are batched
(:mod:`jasco_runtime.batching`); an ingress validates every request with the runtime's own checks before it
is queued, refuses what it cannot take (503 + Retry-After), and serves a web page, metrics and health.
Needs the ``serve`` extra (``pip install "jasco-trt[serve]"``); :mod:`jasco_serve.inputs` needs only the runtime.
"""
__version__ = "0.1.0"
