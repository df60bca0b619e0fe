"""The HTTP ingress (FastAPI on Ray Serve) and the application that ties it to the generator replicas.

Routes: ``POST /v1/generate``, ``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``,
``GET /`` (web page). Error contract: every error is JSON ``{"error": "<one line>"}`` — 400 bad input (the
runtime's messages), 413 body over ``--max-upload-mb``, 415 unsupported content type, 503 + ``Retry-After``
when ``--max-queued`` requests are already admitted, while shutting down or when a replica died under a
request, 504 after ``--request-timeout``; 500 only when a generation itself fails (no traceback either).

The ingress is light (one replica, no engines): it validates a request completely (:mod:`.inputs`) before
admitting it, so a queued request can only fail for reasons that are not the client's.
"""
import asyncio
import base64
import logging
import time
import typing as tp

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from jasco_runtime import audio_io, separation
from jasco_runtime.errors import InputError
from jasco_runtime.export_folder import ExportFolder

from .config import ServeConfig
from .generator import Clip, Failure, JascoGenerator
from .http_io import HTTPError, call, read_body, read_form, web_file
from .inputs import FIELDS, UPLOADS, InputChecker, ParsedRequest
from .metrics import CONTENT_TYPE, ServiceMetrics

logger = logging.getLogger("jasco_serve")
WEB_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
READY_TIMEOUT_S = 5.0

api = FastAPI(title="jasco-serve", docs_url=None, redoc_url=None)


@api.exception_handler(StarletteHTTPException)
async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # never a traceback to the client
    logger.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


@serve.deployment(name="JascoIngress", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class JascoIngress:
    def __init__(self, generator: DeploymentHandle, config: ServeConfig):
        self.config = config
        self.folder = ExportFolder.open(config.engines)
        self.checker = InputChecker(self.folder)
        self.generator = generator
        self.metrics = ServiceMetrics()
        self.admitted = 0
        self.draining = False
        self._engines: tp.Optional[tp.Dict[str, tp.Any]] = None

    # -- generation ---------------------------------------------------------------------------------
    @api.post("/v1/generate")
    async def generate(self, request: Request) -> Response:
        arrival = time.perf_counter()
        status = 500
        try:
            response = await self._generate(request, arrival)
            status = response.status_code
            return response
        except HTTPError as err:
            status = err.status
            return err.response()
        except asyncio.CancelledError:  # the client went away (counted as nginx's 499)
            status = 499
            raise
        finally:
            self.metrics.answered(status)

    async def _generate(self, request: Request, arrival: float) -> Response:
        if self.draining:
            raise HTTPError(503, "the service is shutting down; retry on another instance", retry_after=5)
        parsed = await self._parse(request)
        if self.admitted >= self.config.max_queued:
            raise HTTPError(503, f"the service is at capacity ({self.config.max_queued} requests queued); retry later",
                            retry_after=self.metrics.retry_after_s())
        self.admitted += 1
        self.metrics.queue_depth.set(self.admitted)
        try:
            outcome = await self._run(parsed, arrival)
        finally:
            self.admitted -= 1
            self.metrics.queue_depth.set(self.admitted)
        if isinstance(outcome, Failure):
            raise HTTPError(outcome.status, outcome.message)
        return await self._answer(request, parsed, outcome, arrival)

    async def _parse(self, request: Request) -> ParsedRequest:
        body = await read_body(request, self.config.max_upload_bytes)
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        try:
            if kind in ("application/json", ""):
                return await asyncio.to_thread(self.checker.from_json, body)
            if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
                fields, files = await read_form(request, body, self.config.max_upload_bytes)
                return await asyncio.to_thread(self.checker.from_form, fields, files)
        except InputError as exc:
            raise HTTPError(400, str(exc)) from None
        raise HTTPError(415, f"unsupported content type {kind!r}; send application/json or multipart/form-data")

    async def _run(self, parsed: ParsedRequest, arrival: float) -> tp.Union[Clip, Failure]:
        remaining = self.config.request_timeout - (time.perf_counter() - arrival)
        response = self.generator.generate.remote(parsed.request)

        async def answer() -> tp.Union[Clip, Failure]:
            return await response

        try:
            return await asyncio.wait_for(answer(), timeout=max(remaining, 0.001))
        except asyncio.TimeoutError:
            response.cancel()
            raise HTTPError(504, f"no answer within the request timeout ({self.config.request_timeout:g} s); "
                                 "retry later or with fewer steps") from None
        except RayTaskError as exc:
            logger.error("generator error: %s", exc)
            raise HTTPError(500, f"the generation failed ({type(exc.cause).__name__ if exc.cause else 'error'}); "
                                 "see the server log") from None
        except RayError as exc:  # the replica died or is unreachable: Ray Serve restarts it
            logger.warning("generator replica lost: %s", type(exc).__name__)
            raise HTTPError(503, "the generator replica serving this request stopped (it is being restarted); retry",
                            retry_after=self.metrics.retry_after_s()) from None

    async def _answer(self, request: Request, parsed: ParsedRequest, clip: Clip, arrival: float) -> Response:
        wav = await asyncio.to_thread(audio_io.encode_wav, clip.audio, clip.sample_rate, parsed.subtype, parsed.normalize)
        latency = time.perf_counter() - arrival
        self.metrics.generated(latency, clip.solve_id, clip.solve_prompts)
        headers = {"X-Jasco-Seed": str(parsed.seed), "X-Jasco-NFE": str(clip.nfe),
                   "X-Jasco-Latency-Ms": f"{latency * 1000:.1f}", "X-Jasco-Batch-Prompts": str(clip.solve_prompts)}
        if "application/json" in request.headers.get("accept", ""):
            timings = {k: round(float(v), 6) for k, v in clip.timings.items() if k != "batch_prompts"}
            timings["latency"] = round(latency, 6)
            return JSONResponse({"audio_wav_base64": base64.b64encode(wav).decode("ascii"),
                                 "sample_rate": clip.sample_rate, "seed": parsed.seed, "nfe": clip.nfe,
                                 "batch_prompts": clip.solve_prompts, "timings": timings}, headers=headers)
        return Response(wav, media_type="audio/wav", headers=headers)

    # -- service ------------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> tp.Dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        if self.draining:
            return HTTPError(503, "the service is shutting down").response()
        try:
            await asyncio.wait_for(call(self.generator.ready), timeout=READY_TIMEOUT_S)
        except (asyncio.TimeoutError, RayError):
            return HTTPError(503, "no generator replica is ready (loading the engines or warming up); retry",
                             retry_after=5).response()
        return JSONResponse({"status": "ready"})

    @api.get("/v1/models")
    async def models(self) -> tp.Dict[str, tp.Any]:
        if self._engines is None:
            try:
                self._engines = await asyncio.wait_for(call(self.generator.describe), timeout=READY_TIMEOUT_S)
            except (asyncio.TimeoutError, RayError):
                raise HTTPError(503, "no generator replica is ready yet; retry", retry_after=5) from None
        f, c = self.folder, self.config
        return {
            "model": f.model_id, "variant": f.raw["model"].get("variant"), "conditioners": sorted(f.conditioners),
            "drums_separator": separation.folder_separator(f) is not None,  # drums uploads are separated (issue 18)
            "sample_rate": f.sample_rate, "duration": f.duration, "frame_rate": f.frame_rate,
            "max_duration": (f.graphs["encodec_decoder"].max_size("frames") or f.n_frames) / f.frame_rate,
            "defaults": {k: v for k, v in f.defaults.items() if k != "note"},
            "profiles": {name: g.profile for name, g in f.graphs.items()},
            **self._engines,
            "replicas": c.replicas,
            "limits": {"max_batch_prompts": c.max_batch_prompts, "batch_wait_ms": c.batch_wait_ms,
                       "max_queued": c.max_queued, "request_timeout_s": c.request_timeout,
                       "max_upload_bytes": c.max_upload_bytes, "max_text_tokens": self.checker.max_text_tokens},
            "fields": list(FIELDS), "uploads": list(UPLOADS),
        }

    @api.get("/metrics")
    async def metrics_route(self) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    @api.get("/")
    async def page(self) -> HTMLResponse:
        return HTMLResponse(web_file("index.html"))

    @api.get("/static/{name}")
    async def static(self, name: str) -> Response:
        if name not in WEB_FILES:
            raise HTTPError(404, f"no static file {name!r}")
        return Response(web_file(name), media_type=WEB_FILES[name])

    # -- control (Ray handle calls from jasco-serve) ------------------------------------------------
    def begin_drain(self) -> int:
        """Refuse new generations (503); returns the requests still in flight."""
        self.draining = True
        return self.admitted

    def in_flight(self) -> int:
        return self.admitted


@api.exception_handler(HTTPError)
async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
    return exc.response()


def build_app(config: ServeConfig) -> serve.Application:
    """The Ray Serve application: one ingress, ``config.replicas`` generator replicas."""
    ongoing = max(2 * config.max_batch_prompts, 4)  # a full batch generating and the next one filling
    generator = JascoGenerator.options(
        num_replicas=config.replicas, max_ongoing_requests=ongoing,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
        graceful_shutdown_timeout_s=config.request_timeout, max_constructor_retry_count=3,
    ).bind(config)
    # the ingress takes every connection at once so its own admission (max_queued) answers the excess fast
    return JascoIngress.options(max_ongoing_requests=config.max_queued + 256,
                                graceful_shutdown_timeout_s=config.request_timeout + 10,
                                max_constructor_retry_count=3).bind(generator, config)
