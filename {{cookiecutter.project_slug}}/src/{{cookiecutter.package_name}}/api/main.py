"""The service: FastAPI for documentation, a lean path for serving.

`/predict`, `/batch-predict` and the probes are raw ASGI endpoints that
`PredictionApp.__call__` answers before FastAPI's middleware and routing:
that generic machinery costs more per request than validation and the
model together (see README, Performance). They validate with the same
Pydantic models, which also document them in `/docs` through
`documented_routes()`. Everything else (docs, metrics, drift, 404, 405)
is served by FastAPI as usual.
"""

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial

import orjson
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import DESCRIPTION, PROJECT_NAME, __version__
from ..monitoring import metrics
from ..monitoring.drift import DriftMonitor
from ..monitoring.prediction_log import PredictionLog
from ..predict import ModelLoadError, Predictor, as_batch, row_reader
from ..settings import Settings, get_settings
from .batching import MicroBatcher
from .cache import PredictionCache
from .schemas import (
    FEATURES,
    BatchRequest,
    BatchResponse,
    Item,
    Message,
    Prediction,
    ValidationErrorResponse,
    ValidBatch,
    batch_rows,
)

log = logging.getLogger(__name__)

JSON = "application/json"
JSON_HEADERS = [(b"content-type", JSON.encode())]
NOT_LOADED = b'{"detail":"Model not loaded yet."}'
FAILED = b'{"detail":"Prediction failed; see the service log."}'
ROW_OF = row_reader(FEATURES)
# A 422 lists at most this many problems: a 1 MB body of bad items (or of
# unknown fields) would otherwise get an answer a hundred times its size.
MAX_ERRORS = 100
# A /predict body is one item, a few hundred bytes: a larger one is refused
# before Pydantic reads it (it would report every unknown key of a 1 MB
# body: about half a second of the worker's event loop).
ONE_ITEM_BYTES = 16 * 1024


class RequestRejected(Exception):
    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body


def json_response(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type=JSON)


def invalid(error: ValidationError) -> RequestRejected:
    """422 in FastAPI's shape: every problem with the field it concerns."""
    details = error.errors(
        include_url=False, include_context=False, include_input=False
    )[:MAX_ERRORS]
    for detail in details:
        detail["loc"] = ["body", *detail["loc"]]
    return RequestRejected(422, {"detail": details})


async def read_body(
    message: dict, receive, limit: int, why: str = "MAX_BODY_BYTES"
) -> bytes:
    """The whole body, from its first message on; refused (413), saying
    `why`, as soon as it grows past `limit`."""
    chunks, size = [], 0
    while True:
        if message["type"] != "http.request":  # the client went away
            raise RequestRejected(400, {"detail": "Client disconnected."})
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            detail = f"Request body over {limit} bytes ({why})."
            raise RequestRejected(413, {"detail": detail})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        message = await receive()


def items_in(body: bytes) -> int:
    """How many items a /batch-predict body holds (0 if it is not JSON with
    an items list: then Pydantic words the problem)."""
    try:
        items = orjson.loads(body).get("items")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return len(items) if type(items) is list else 0


class Endpoint:
    """A raw ASGI endpoint: `handle(scope, receive)` returns the status and
    the JSON body. A Route mounts an instance (not a function) as it is, so
    the hot path builds no Request or Response objects."""

    def __init__(self, handle):
        self.handle = handle

    async def __call__(self, scope, receive, send) -> int:
        status, body = await self.handle(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": JSON_HEADERS
                + [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return status


class Deadlines:
    """REQUEST_TIMEOUT_S for every request in flight, with one timer.

    asyncio.timeout() arms a timer per request (6 us, more than the rest of
    a cached answer costs), and even reading the clock shows in a cached
    answer. So a request notes only how many sweeps have run; a sweep runs
    every tenth of the timeout and cancels the requests that have seen ten
    sweeps since: a request times out after 1.0 to 1.1 times
    REQUEST_TIMEOUT_S (later if the loop was busy, never earlier).
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.sweeps = 0
        self._started: dict[asyncio.Task, int] = {}  # in start order
        self._expired: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._current_task = asyncio.current_task

    def sweep_every_tenth(self) -> None:
        """Sweep on the running loop, until stop()."""
        loop = asyncio.get_running_loop()
        # Told the loop, current_task() skips get_running_loop(): on Python
        # 3.11 a getpid() system call, once per request otherwise.
        self._current_task = partial(asyncio.current_task, loop)
        interval = self.seconds / 10

        def sweep():
            try:
                self._sweep()
            finally:  # deadlines hold for as long as the loop runs
                self._timer = loop.call_later(interval, sweep)

        self._timer = loop.call_later(interval, sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._current_task = asyncio.current_task

    def start(self) -> asyncio.Task:
        task = self._current_task()
        self._started[task] = self.sweeps
        return task

    def finish(self, task: asyncio.Task) -> None:
        if self._started.pop(task, None) is None:  # it ran out of time
            self._expired.discard(task)

    def expired(self, task: asyncio.Task) -> bool:
        """Whether the task was cancelled because its time ran out."""
        if task in self._expired:
            task.uncancel()
            return True
        return False

    def _sweep(self) -> None:
        self.sweeps += 1
        # A request that noted sweep n started after it, so at sweep n + 11
        # more than ten tenths have passed.
        late = []
        for task, noted in self._started.items():
            if noted > self.sweeps - 11:
                break  # the rest started later still
            late.append(task)
        for task in late:
            del self._started[task]
            self._expired.add(task)
            task.cancel()


class Service:
    """Everything a request needs, created once per worker at start-up."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.predictor: Predictor | None = None
        self.deadlines = Deadlines(settings.request_timeout_s)

    def load(self) -> None:
        settings = self.settings
        predictor = Predictor.load(settings)
        if predictor.features != FEATURES:
            raise ModelLoadError(
                f"{settings.artifacts_dir} was trained on features "
                f"{predictor.features}, the API expects {FEATURES}."
            )
        self.answer_rows = metrics.observe_inference(predictor.answers)
        self.batcher = MicroBatcher(self.answer_rows, settings.max_micro_batch)
        self.cache = PredictionCache(
            settings.cache_size,
            # The answer's format may change with the app's version.
            namespace=f"prediction:{__version__}:{predictor.answers_key}",
            url=settings.cache_url,
            ttl_s=settings.cache_ttl_s,
        )
        log_file = settings.prediction_log
        log = log_file and PredictionLog(
            log_file, FEATURES, settings.prediction_log_max_bytes
        )
        try:
            self.monitor = DriftMonitor(
                settings.artifacts_dir / "reference.csv",
                predictor.classes,
                window=settings.drift_window,
                min_samples=settings.drift_min_samples,
                p_value=settings.drift_p_value,
                cache_s=settings.drift_cache_s,
                log=log,
            )
        except (FileNotFoundError, ValueError) as error:  # made by training
            raise ModelLoadError(str(error)) from None
        # Recompute drift in the background too, so its gauges stay fresh.
        self.monitor.refresh_every(settings.drift_cache_s)
        if self.monitor.log is not None:
            self.monitor.log.flush_every()
        info = predictor.info()
        metrics.MODEL_INFO.labels(
            __version__,
            info["model_version"],
            info["device"],
            str(info["quantized"]).lower(),
        ).set(1)
        self.predictor = predictor

    async def close(self) -> None:
        if self.predictor is not None:
            await self.cache.close()
            if self.monitor.log is not None:
                self.monitor.log.close()

    async def answer_row(self, row: tuple) -> bytes:
        """/predict: the cached answer, or the model's (micro-batched)."""
        encoded = await self.cache.get(row)
        if encoded is None:
            if self.settings.micro_batching:
                encoded = await self.batcher.predict(row)
            else:
                (encoded,) = self.answer_rows([row])
            await self.cache.put(row, encoded)
        self.monitor.observe((row,), (encoded,))
        return encoded

    async def answer_all(self, rows: list[tuple], batch) -> list[bytes]:
        """/batch-predict: at most max_micro_batch rows per model call, and
        a loop turn for other requests between calls: no call blocks the
        loop for longer than one batch.

        Bulk items skip the prediction cache: looking up and storing each
        one cost more than the model, and they would push the hot set of
        /predict out of the LRU. Identical items in a request are computed
        once (per model call).
        """
        size = self.settings.max_micro_batch
        if len(rows) <= size:
            return self.answer_rows(rows, batch)
        answers = []
        for start in range(0, len(rows), size):
            if start:
                await asyncio.sleep(0)
            end = start + size
            answers += self.answer_rows(rows[start:end], batch[start:end])
        return answers

    def guarded(self, handle, answer_known=None, one_item=False) -> Callable:
        """The endpoint of a prediction route: reads the body, gives it to
        `handle`, and applies the limits and errors the routes share
        (`one_item`: the body holds one item, ONE_ITEM_BYTES at most).

        `answer_known(body)`, where given, answers the bodies it knows (None
        for the others) without the cost of a coroutine: a cached answer
        costs little more than the HTTP exchange, so every call shows.
        """
        deadlines = self.deadlines
        limit, why = self.settings.max_body_bytes, "MAX_BODY_BYTES"
        if one_item and limit > ONE_ITEM_BYTES:
            limit, why = ONE_ITEM_BYTES, "one item; many go to /batch-predict"

        async def endpoint(scope, receive) -> tuple[int, bytes]:
            if self.predictor is None:
                return 503, NOT_LOADED
            task = deadlines.start()
            try:
                message = await receive()
                body = message.get("body", b"")
                # Almost always the first message is the whole body; the
                # others go to read_body (as does every check it makes).
                if (
                    message.get("more_body", False)
                    or len(body) > limit
                    or message["type"] != "http.request"
                ):
                    body = await read_body(message, receive, limit, why)
                if answer_known is not None:
                    known = answer_known(body)
                    if known is not None:
                        return 200, known
                return 200, await handle(body)
            except RequestRejected as rejected:
                return rejected.status, orjson.dumps(rejected.body)
            except asyncio.CancelledError:
                if not deadlines.expired(task):
                    raise  # the server is stopping
                return 503, orjson.dumps(
                    {
                        "detail": "Request took longer than "
                        f"{self.settings.request_timeout_s} s "
                        "(REQUEST_TIMEOUT_S)."
                    }
                )
            except Exception:  # this request's failure, never its neighbours'
                log.exception("Prediction failed")
                return 500, FAILED
            finally:
                deadlines.finish(task)

        return endpoint

    def answer_known(self, body: bytes) -> bytes | None:
        """/predict: the same bytes as an earlier valid request get the same
        answer, without parsing or validating again."""
        known = self.cache.get_body(body)
        if known is None:
            return None
        row, encoded = known
        self.monitor.observe((row,), (encoded,))
        return encoded

    async def answer_one(self, body: bytes) -> bytes:
        try:
            item = Item.model_validate_json(body)
        except ValidationError as error:
            raise invalid(error) from None
        row = ROW_OF(item)
        encoded = await self.answer_row(row)
        self.cache.put_body(body, row, encoded)
        return encoded

    def refuse_too_many(self, count: int) -> None:
        limit = self.settings.max_batch_items
        if count > limit:
            raise RequestRejected(
                422,
                {
                    "detail": [
                        {
                            "type": "too_long",
                            "loc": ["body", "items"],
                            "msg": f"At most {limit} items per request "
                            "(MAX_BATCH_ITEMS).",
                        }
                    ]
                },
            )

    async def answer_many(self, body: bytes) -> bytes:
        valid = batch_rows(body)
        if valid is None:  # not the common case: Pydantic decides
            # Counted first: Pydantic would check (and report on) every
            # item of a 1 MB body, seconds of CPU and a 100 MB answer.
            self.refuse_too_many(items_in(body))
            try:
                request = BatchRequest.model_validate_json(body)
            except ValidationError as error:
                raise invalid(error) from None
            rows = list(map(ROW_OF, request.items))
            valid = ValidBatch(rows, as_batch(rows))
        self.refuse_too_many(len(valid.rows))
        encoded = await self.answer_all(*valid)
        self.monitor.observe(valid.rows, encoded)
        return b'{"predictions":[' + b",".join(encoded) + b"]}"

    async def health(self, scope, receive) -> tuple[int, bytes]:
        return 200, b'{"status":"ok"}'

    async def ready(self, scope, receive) -> tuple[int, bytes]:
        if self.predictor is None:
            return 503, b'{"ready":false}'
        info = {"ready": True, "version": __version__, **self.predictor.info()}
        return 200, orjson.dumps(info)

    async def metrics(self, request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def drift(self, request: Request) -> Response:
        if self.predictor is None:
            return json_response({"detail": "Model not loaded yet."}, 503)
        return json_response(self.monitor.report())


def documented_routes() -> APIRouter:
    """What /docs shows. Requests are served by the Service methods above."""
    router = APIRouter()
    errors = {
        413: {"model": Message, "description": "Body too large"},
        422: {"model": ValidationErrorResponse, "description": "Invalid"},
        503: {"model": Message, "description": "Not ready or timed out"},
    }

    @router.post("/predict", response_model=Prediction, responses=errors)
    async def predict(item: Item):
        """Classify one flower."""

    @router.post(
        "/batch-predict", response_model=BatchResponse, responses=errors
    )
    async def batch_predict(batch: BatchRequest):
        """Classify many flowers in one forward pass, answers in order."""

    @router.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive."""

    @router.get("/ready", responses={503: {"description": "Not loaded"}})
    async def ready() -> dict[str, str | bool | int]:
        """The model is loaded and the service can answer."""

    @router.get("/monitoring/drift")
    async def drift() -> dict:
        """Data and prediction drift of the recent window (see README)."""

    @router.get("/metrics", response_class=Response)
    async def prometheus_metrics():
        """Prometheus metrics (text exposition format)."""

    return router


class PredictionApp(FastAPI):
    """FastAPI, with the hot routes answered before its middleware stack.

    Every request is counted and timed in `metrics.REQUEST_STATS` (plain
    numbers, added to Prometheus once a second); requests for a hot route
    (method and path) go straight to its endpoint.
    """

    hot_routes: dict[tuple[str, str], Endpoint] = {}
    # Paths counted under their own route label (the rest: "other").
    labelled_paths: frozenset[str] = frozenset()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan
            return await super().__call__(scope, receive, send)
        stats, start = metrics.REQUEST_STATS, time.perf_counter()
        method, path = scope["method"], scope["path"]
        endpoint = self.hot_routes.get((method, path))
        status = 500
        stats.in_flight += 1
        try:
            if endpoint is not None:
                status = await endpoint(scope, receive, send)
                return

            async def send_with_status(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await super().__call__(scope, receive, send_with_status)
        finally:
            stats.in_flight -= 1
            route = path if path in self.labelled_paths else "other"
            stats.record(route, method, status, time.perf_counter() - start)


def create_app(settings: Settings | None = None) -> PredictionApp:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper())
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.load()
        metrics.flush_every()
        # Freeze the start-up heap: full collections of ~200k long-lived
        # objects otherwise show up as 100 ms pauses in the p99. (No
        # collection first: it found ~50 objects and cost 0.1 s of the
        # cold start.)
        gc.freeze()
        service.deadlines.sweep_every_tenth()
        yield
        service.deadlines.stop()
        await service.close()
        metrics.flush()

    app = PredictionApp(
        title=PROJECT_NAME,
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
    )
    app.state.service = service
    app.hot_routes = {
        ("POST", "/predict"): Endpoint(
            service.guarded(
                service.answer_one, service.answer_known, one_item=True
            )
        ),
        ("POST", "/batch-predict"): Endpoint(
            service.guarded(service.answer_many)
        ),
        ("GET", "/health"): Endpoint(service.health),
        ("GET", "/ready"): Endpoint(service.ready),
    }
    app.labelled_paths = frozenset(path for _, path in app.hot_routes) | {
        "/metrics", "/monitoring/drift", "/docs", "/openapi.json"
    }  # fmt: skip
    # The same endpoints as routes too: FastAPI answers what the hot path
    # does not (HEAD, a wrong method: 405).
    app.router.routes[:0] = [
        Route(path, endpoint, methods=[method])
        for (method, path), endpoint in app.hot_routes.items()
    ] + [
        Route("/metrics", service.metrics, methods=["GET"]),
        Route("/monitoring/drift", service.drift, methods=["GET"]),
    ]
    docs = documented_routes()

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=docs.routes,
            )
        return app.openapi_schema

    app.openapi = openapi
    return app
