"""The HTTP ingress (FastAPI on Ray Serve) and the application that ties it to the generator replicas.

Routes: ``POST /v1/generate``, ``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``,
``GET /`` (web page). With ``--api-key-file`` (:mod:`.auth`) ``/v1/*`` (and ``/metrics`` unless
``--metrics-public``) need ``Authorization: Bearer KEY`` (401 otherwise); the rest stays open. Error contract:
every error is JSON ``{"error": "<one line of at most 300 characters>"}`` — 400 bad input (the runtime's
messages), 401 no valid key, 413 body over ``--max-upload-mb``, 415 unsupported content type, 503 + ``Retry-After``
when ``--max-queued`` requests are already admitted, while shutting down or when a replica died under a
request, 504 after ``--request-timeout``; 500 only when a generation itself fails (no traceback either).

The ingress is light (one replica, no engines): it validates a request completely (:mod:`.inputs`) before
admitting it, so a queued request can only fail for reasons that are not the client's.
``POST /v1/extract`` (chords and melody of a song, docs/extract.md) lives in :mod:`.extract_route`.
"""
import asyncio
import base64
import json
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
from jasco_runtime.windows import MIN_HOP

from . import extract_route
from .auth import ApiKeys
from .config import AUTO, ServeConfig
from .generator import Clip, Failure, JascoGenerator
from .http_io import HTTPError, bounded, call, read_body, read_form, unauthorized, wants_json, web_file
from .inputs import FIELDS, UPLOADS, InputChecker, ParsedRequest
from .metrics import CONTENT_TYPE, ServiceMetrics

logger = logging.getLogger("jasco_serve")
WEB_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
READY_TIMEOUT_S = 5.0

api = FastAPI(title="jasco-serve", docs_url=None, redoc_url=None)


@api.exception_handler(StarletteHTTPException)
async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": bounded(str(exc.detail))}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # never a traceback to the client
    logger.error("unexpected error on %s: %s: %s", bounded(request.url.path, 100), type(exc).__name__,
                 bounded(str(exc)))
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


HEAD_NODE = "node:__internal_head__"  # Ray's resource of the head node (where Serve's controller runs too)


@serve.deployment(name="JascoIngress", num_replicas=1, ray_actor_options={"num_cpus": 0, "resources": {HEAD_NODE: 0.001}})
@serve.ingress(api)
class JascoIngress:
    def __init__(self, generator: DeploymentHandle, config: ServeConfig):
        self.config = config
        if not config.model_names:
            config.resolve_models()
        self.folders = {name: ExportFolder.open(path) for name, path in config.model_names.items()}
        self.checkers = {name: InputChecker(folder) for name, folder in self.folders.items()}
        self.default_model = config.default_model
        self.folder, self.checker = self.folders[self.default_model], self.checkers[self.default_model]
        self.keys = ApiKeys(config.api_key_file)
        self.generator = generator
        self.metrics = ServiceMetrics()
        self.admitted = 0
        self.draining = False
        self._engines: tp.Optional[tp.Dict[str, tp.Any]] = None

    # -- API keys -----------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> tp.Optional[str]:
        """The key id of an authorised request (None without keys configured); 401 otherwise."""
        if not self.keys.enabled:
            return None
        kid = self.keys.identify(request.headers.get("authorization"))
        if kid is None:
            raise unauthorized()
        return kid

    def reload_api_keys(self) -> str:
        """SIGHUP from jasco-serve: re-read the key file; the keys in use stay when it cannot be used."""
        if not self.keys.enabled:
            return "no --api-key-file: nothing to reload"
        try:
            return f"{self.keys.reload()} API key(s) loaded"
        except InputError as exc:
            logger.warning("API keys not reloaded: %s", exc)
            return f"error: {exc} (the previous keys stay in use)"

    # -- generation ---------------------------------------------------------------------------------
    @api.post("/v1/generate")
    async def generate(self, request: Request) -> Response:
        arrival = time.perf_counter()
        status, kid, model = 500, None, None
        try:
            kid = self._authorize(request)
            model, response = await self._generate(request, arrival)
            status = response.status_code
            return response
        except HTTPError as err:
            status = err.status
            return err.response()
        except asyncio.CancelledError:  # the client went away (counted as nginx's 499)
            status = 499
            raise
        finally:
            self.metrics.answered(status, model)
            if self.keys.enabled:
                self.metrics.keyed(kid, status)

    async def _generate(self, request: Request, arrival: float) -> tp.Tuple[str, Response]:
        if self.draining:
            raise HTTPError(503, "the service is shutting down; retry on another instance", retry_after=5)
        model, parsed = await self._parse(request)
        if self.admitted >= self.config.max_queued:
            raise HTTPError(503, f"the service is at capacity ({self.config.max_queued} requests queued); retry later",
                            retry_after=self.metrics.retry_after_s())
        self.admitted += 1
        self.metrics.queue_depth.set(self.admitted)
        try:
            outcome = await self._run(model, parsed, arrival)
        finally:
            self.admitted -= 1
            self.metrics.queue_depth.set(self.admitted)
        if isinstance(outcome, Failure):
            raise HTTPError(outcome.status, outcome.message)
        return model, await self._answer(request, parsed, outcome, arrival)

    def _model(self, name: tp.Any) -> str:
        if name is None or name == "":
            return self.default_model
        if not isinstance(name, str) or name not in self.checkers:
            shown = bounded(repr(name), 80)
            raise InputError(f"unknown model {shown}; GET /v1/models lists the models: {', '.join(self.checkers)}")
        return name

    async def _parse(self, request: Request) -> tp.Tuple[str, ParsedRequest]:
        """The model a request asks for (its ``model`` field) and the request checked against that model."""
        body = await read_body(request, self.config.max_upload_bytes)
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        try:
            if kind in ("application/json", ""):
                model = self.default_model
                if b'"model"' in body:  # the field is the service's, not the generation's: taken out here
                    try:
                        values = json.loads(body.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        values = None  # the checker names the JSON error
                    if isinstance(values, dict) and "model" in values:
                        model = self._model(values.pop("model"))
                        body = json.dumps(values).encode("utf-8")
                return model, await asyncio.to_thread(self.checkers[model].from_json, body)
            if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
                fields, files = await read_form(request, body, self.config.max_upload_bytes)
                model = self._model(fields.pop("model", None))
                return model, await asyncio.to_thread(self.checkers[model].from_form, fields, files)
        except InputError as exc:
            raise HTTPError(400, str(exc)) from None
        raise HTTPError(415, f"unsupported content type {bounded(kind, 60)!r}; send application/json or multipart/form-data")

    async def _run(self, model: str, parsed: ParsedRequest, arrival: float) -> tp.Union[Clip, Failure]:
        remaining = self.config.request_timeout - (time.perf_counter() - arrival)
        if model == self.default_model:  # every replica holds the default model
            response = self.generator.generate.remote(parsed.request)
        else:  # routed to a replica that has the model loaded where one does (Ray Serve multiplexing)
            response = self.generator.options(multiplexed_model_id=model).generate.remote(parsed.request, model)

        async def answer() -> tp.Union[Clip, Failure]:
            return await response

        try:
            return await asyncio.wait_for(answer(), timeout=max(remaining, 0.001))
        except asyncio.TimeoutError:
            response.cancel()
            raise HTTPError(504, f"no answer within the request timeout ({self.config.request_timeout:g} s); "
                                 "retry later or with fewer steps") from None
        except RayTaskError as exc:
            logger.error("generator error: %s", bounded(str(exc)))
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
                   "X-Jasco-Latency-Ms": f"{latency * 1000:.1f}", "X-Jasco-Batch-Prompts": str(clip.solve_prompts),
                   "X-Jasco-Replica": clip.replica}
        if wants_json(request.headers.get("accept")):  # R04/R05: q-values and case honoured
            timings = {k: round(float(v), 6) for k, v in clip.timings.items() if k != "batch_prompts"}
            timings["latency"] = round(latency, 6)
            return JSONResponse({"audio_wav_base64": base64.b64encode(wav).decode("ascii"),
                                 "sample_rate": clip.sample_rate, "seed": parsed.seed, "nfe": clip.nfe,
                                 "batch_prompts": clip.solve_prompts, "timings": timings}, headers=headers)
        return Response(wav, media_type="audio/wav", headers=headers)

    @api.post("/v1/extract")
    async def extract(self, request: Request) -> Response:  # conditions from a song (extract_route.py)
        try:
            self._authorize(request)  # /v1/* needs the key when the service has keys
            return await extract_route.extract(request, self.folder, self.config.max_upload_bytes)
        except HTTPError as err:
            return err.response()

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
    async def models(self, request: Request) -> Response:
        try:
            return JSONResponse(await self._models(request))
        except HTTPError as err:  # answered here: the app's handlers do not see classes pickled by value
            if self.keys.enabled and err.status == 401:
                self.metrics.keyed(None, 401)
            return err.response()

    async def _models(self, request: Request) -> tp.Dict[str, tp.Any]:
        kid = self._authorize(request)
        if self.keys.enabled:
            self.metrics.keyed(kid, 200)
        if self._engines is None:
            try:
                self._engines = await asyncio.wait_for(call(self.generator.describe), timeout=READY_TIMEOUT_S)
            except (asyncio.TimeoutError, RayError):
                raise HTTPError(503, "no generator replica is ready yet; retry", retry_after=5) from None
        c = self.config
        return {
            **self._describe(self.default_model),  # the default model's description at the top level
            **self._engines,
            "default_model": self.default_model,
            "models": [{"name": name, **self._describe(name)} for name in self.folders],
            "replicas": c.replicas, "replica_range": list(c.replica_counts),
            "max_models_per_replica": c.max_models_per_replica, "api_keys": self.keys.enabled,
            "limits": {"max_batch_prompts": c.max_batch_prompts, "batch_wait_ms": c.batch_wait_ms,
                       "max_queued": c.max_queued, "request_timeout_s": c.request_timeout,
                       "max_upload_bytes": c.max_upload_bytes, "max_text_tokens": self.checker.conditioner.max_text_tokens,
                       # the window plan's one rule (jasco_runtime.windows): bounds the windows of a song
                       "min_duration_s": 1 / self.folder.frame_rate, "min_overlap_s": 1 / self.folder.frame_rate,
                       "max_overlap_s": self.folder.duration - MIN_HOP, "min_window_hop_s": MIN_HOP},
            "fields": ["model", *FIELDS], "uploads": list(UPLOADS),
        }

    def _describe(self, name: str) -> tp.Dict[str, tp.Any]:
        f = self.folders[name]
        return {"model": f.model_id, "variant": f.model.variant, "conditioners": sorted(f.conditioners),
                "drums_separator": separation.folder_separator(f) is not None,  # drums uploads are separated
                "sample_rate": f.sample_rate, "duration": f.duration, "frame_rate": f.frame_rate,
                "max_duration": f.max_duration,
                "defaults": {k: v for k, v in f.defaults.items() if k != "note"},
                "profiles": {g_name: {axis: r.to_dict() for axis, r in g.profile.items()} for g_name, g in f.graphs.items()}}

    @api.get("/metrics")
    async def metrics_route(self, request: Request) -> Response:
        if not self.config.metrics_public:
            try:
                self._authorize(request)
            except HTTPError as err:
                return err.response()
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    @api.get("/")
    async def page(self) -> HTMLResponse:
        return HTMLResponse(web_file("index.html"))

    @api.get("/static/{name}")
    async def static(self, name: str) -> Response:
        if name not in WEB_FILES:
            return HTTPError(404, f"no static file {bounded(repr(name), 80)}").response()
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


def replica_options(config: ServeConfig) -> tp.Dict[str, tp.Any]:
    """The generator deployment's replica count: fixed, or Ray Serve autoscaling on the requests each replica
    holds (``--replicas auto``: between ``--min-replicas`` and ``--max-replicas``, towards
    ``--target-ongoing-requests`` per replica)."""
    if config.replicas == AUTO:
        return {"autoscaling_config": {"min_replicas": config.min_replicas, "initial_replicas": config.min_replicas,
                                       "max_replicas": config.max_replicas,
                                       "target_ongoing_requests": config.target_ongoing_requests,
                                       "upscale_delay_s": 2.0, "downscale_delay_s": 60.0,
                                       "metrics_interval_s": 1.0, "look_back_period_s": 5.0}}
    return {"num_replicas": int(config.replicas)}


def build_app(config: ServeConfig) -> serve.Application:
    """The Ray Serve application: one ingress, the generator replicas (``config.replicas``, or autoscaled)."""
    if not config.model_names:
        config.resolve_models()
    ongoing = max(2 * config.max_batch_prompts, 4)  # a full batch generating and the next one filling
    extra: tp.Dict[str, tp.Any] = {}
    if config.max_replicas_per_node is not None:
        extra["max_replicas_per_node"] = config.max_replicas_per_node
    generator = JascoGenerator.options(
        **replica_options(config), max_ongoing_requests=ongoing,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
        graceful_shutdown_timeout_s=config.request_timeout, max_constructor_retry_count=3, **extra,
    ).bind(config)
    # the ingress takes every connection at once so its own admission (max_queued) answers the excess fast;
    # it stays on the head node, so losing a worker node loses generator replicas only
    return JascoIngress.options(max_ongoing_requests=config.max_queued + 256,
                                graceful_shutdown_timeout_s=config.request_timeout + 10,
                                max_constructor_retry_count=3).bind(generator, config)
