"""`make bench`: how close the service comes to the model's own speed.

Measures, in one run on this machine:
- the limit: the Predictor pipeline in-process (list -> tensor -> forward
  -> softmax -> list) at batch 1 and at batch 256;
- the service as `make production` runs it (gunicorn, one uvicorn worker,
  loopback), driven by a bounded load generator: `/predict` with inputs
  that vary per request (micro-batching on and off), `/batch-predict`
  (also with the prediction log on), a cached `/predict`, `/health` (the
  HTTP ceiling) and the cold start;
- the naive variant (FastAPI `async def`, Pydantic body, one model call
  per request) built by `naive_app()` below;
- the floors under two targets: the /batch-predict handler called
  in-process (the app without HTTP), and `floor_app()` below, a bare ASGI
  app under the same server that answers constants (HTTP without the
  app): the same batch bodies, and a constant POST against its /health.
Shared machines change speed by tens of percent within a minute, so the
run goes in rounds: each round measures the limit, then every load point
for a share of its time, and each figure is compared with the limit of
its own round. Prints one table and writes the same figures to bench.json
and bench.png. Absolute figures vary between runs: read the ratios.

Load generators, best first: wrk (a Lua script makes every body
different, so the cache is not what is measured), hey (constant bodies
only: the varying ones then use the Python client), a small asyncio
HTTP/1.1 client. Every point is limited in time and in requests. Inputs
have the API's features, each drawn from the range it spans in the
training data (artifacts/reference.csv); a run in which any request
fails exits 1.
"""

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

from .local_server import (
    APP,
    PACKAGE,
    free_port,
    loopback_env,
    start_production,
    stop_production,
)
from .settings import get_settings
from .timing import items_per_second, percentile

BATCH_ITEMS = 256
BATCH_CONCURRENCY = 8
CONCURRENCIES = (1, 16, 64)
READY_TIMEOUT_S = 60.0
ROUNDS = 3
LIMIT_SECONDS = 0.5  # per figure of the limit, in each round
median = statistics.median

# Targets of the issue, as (figure, description, check(figures) -> bool).
PREDICT = "/predict c=64 batching on"
NAIVE = "/predict c=64 naive FastAPI"
BATCH = f"/batch-predict {BATCH_ITEMS} items c={BATCH_CONCURRENCY}"
BATCH_LOGGED = f"{BATCH} + log"
CACHED = "/predict c=64 cached"
HEALTH = "/health c=64"
COLD_START = "cold start to /ready"
# Floors, beside the figures they bound (no targets of their own).
BATCH_APP = "  the same app in-process, no HTTP"
BATCH_FLOOR = "  bare ASGI app, same bodies"
POST_FLOOR = "  bare ASGI app, constant POST c=64"
HEALTH_FLOOR = "  bare ASGI app, /health c=64"
IMPORT_TORCH = "  of which import torch alone"


# --- the limit: the model pipeline in-process ------------------------------


@dataclass(frozen=True)
class Inputs:
    """Valid inputs: the features, each within the range that the training
    data spans."""

    features: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def of(cls, artifacts: Path) -> "Inputs":
        from .monitoring.drift import load_reference

        features, x, _, _ = load_reference(artifacts / "reference.csv")
        low, high = x.min(axis=0).tolist(), x.max(axis=0).tolist()
        return cls(tuple(features), tuple(low), tuple(high))

    def row(self, generator: random.Random) -> tuple[float, ...]:
        return tuple(
            float(NUMBER % generator.uniform(low, high))
            for low, high in zip(self.low, self.high)
        )

    def item_format(self) -> str:
        """An item's JSON with a NUMBER placeholder for each feature."""
        members = (f'"{name}":{NUMBER}' for name in self.features)
        return "{" + ",".join(members) + "}"

    def item(self, generator: random.Random) -> str:
        return self.item_format() % self.row(generator)

    def batch(self, generator: random.Random, items: int) -> str:
        """A /batch-predict body of `items` items, compact."""
        members = ",".join(self.item(generator) for _ in range(items))
        return '{"items":[' + members + "]}"


# Six significant digits: the measurements of any scale, in short bodies.
NUMBER = "%.6g"


def random_rows(inputs: Inputs, n: int, seed: int = 0) -> list[tuple]:
    generator = random.Random(seed)
    return [inputs.row(generator) for _ in range(n)]


def measure_limit(
    inputs: Inputs, seconds: float = 1.0, settings=None
) -> dict[str, float]:
    """In-process predictions/s at batch 1 and items/s at batch 256."""
    from .predict import Predictor

    predictor = Predictor.load(settings or get_settings())
    rows = random_rows(inputs, 4096)
    singles = iter(rows * 10_000)
    batch = rows[:BATCH_ITEMS]
    return {
        "single_per_s": items_per_second(
            lambda: predictor.probabilities([next(singles)]), 1, seconds
        ),
        "batch_items_per_s": items_per_second(
            lambda: predictor.probabilities(batch), BATCH_ITEMS, seconds
        ),
    }


def batch_bodies(inputs: Inputs, n: int, seed: int = 0) -> list[bytes]:
    """`n` different /batch-predict bodies, as the load generators write
    them."""
    generator = random.Random(seed)
    return [inputs.batch(generator, BATCH_ITEMS).encode() for _ in range(n)]


def app_batch_rate(inputs: Inputs, settings) -> Callable[[float], float]:
    """The /batch-predict handler of the service (`Service.answer_many`:
    reading the body, the model, the answer, the drift window) called
    in-process: items/s for about `seconds`, without HTTP."""
    from .api.main import Service

    service = Service(settings)
    service.load()
    bodies = batch_bodies(inputs, 64)

    async def run(seconds: float) -> float:
        for body in bodies[:20]:  # warm-up
            await service.answer_many(body)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await service.answer_many(bodies[calls % len(bodies)])
            calls += 1
        return calls * BATCH_ITEMS / (time.perf_counter() - start)

    return lambda seconds: asyncio.run(run(seconds))


# --- the naive variant and the floor -----------------------------------------


def naive_app():
    """The baseline the hot path is compared with: FastAPI `async def`,
    a Pydantic body and response model, one model call per request."""
    from fastapi import FastAPI

    from .api.schemas import FEATURES, Item, Prediction
    from .predict import Predictor, clean

    loaded = {}

    @asynccontextmanager
    async def lifespan(app):
        loaded["predictor"] = Predictor.load(get_settings())
        yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/predict", response_model=Prediction)
    async def predict(item: Item):
        return loaded["predictor"].predict_rows([clean(item, FEATURES)])[0]

    @app.get("/ready")
    async def ready():
        return {"ready": True}

    return app


def floor_app():
    """The HTTP floor: a bare ASGI app that reads each body and answers
    the service's own answer, computed once (the /predict one for the
    documented example, the /batch-predict one for 256 items), with the
    service's own response code. Whatever the service does on top of this
    costs throughput."""
    import gc

    from .api.main import Endpoint
    from .api.schemas import EXAMPLE, FEATURES
    from .predict import Predictor

    settings = get_settings()
    predictor = Predictor.load(settings)
    rows = random_rows(Inputs.of(settings.artifacts_dir), BATCH_ITEMS)
    answers = {
        "/predict": predictor.answers([tuple(map(EXAMPLE.get, FEATURES))])[0],
        "/batch-predict": b'{"predictions":['
        + b",".join(predictor.answers(rows))
        + b"]}",
        "/health": b'{"status":"ok"}',
        "/ready": b'{"ready":true}',
    }
    not_found = b'{"detail":"Not Found"}'

    async def constant(scope, receive) -> tuple[int, bytes]:
        if scope["method"] == "POST":  # the whole body, as the service
            message = await receive()
            while message.get("more_body", False):
                message = await receive()
        answer = answers.get(scope["path"])
        return (404, not_found) if answer is None else (200, answer)

    endpoint = Endpoint(constant)
    gc.freeze()  # as the service does after start-up

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await endpoint(scope, receive, send)

    return app


# --- the server under test ---------------------------------------------------


def http_status(port: int, path: str, timeout: float = 0.5) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            head = sock.recv(64)
    except OSError:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else None


@dataclass
class Server:
    port: int
    cold_start_s: float
    process: subprocess.Popen


@contextmanager
def serve(app: str, artifacts: Path, **env: str):
    """`make production` with one worker on a free loopback port; yields
    once /ready answers 200, with the time that took from process start."""
    port = free_port()
    environment = loopback_env(
        port,
        ARTIFACTS_DIR=str(artifacts.resolve()),
        WEB_CONCURRENCY="1",
        TORCH_THREADS="1",
        LOG_LEVEL="warning",
        **env,
    )
    start = time.perf_counter()
    process = start_production(app, env=environment)
    try:
        deadline = start + READY_TIMEOUT_S
        while http_status(port, "/ready") != 200:
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"{app} did not become ready on {port}")
            time.sleep(0.005)
        yield Server(port, time.perf_counter() - start, process)
    finally:
        stop_production(process, 30)


# --- load generators ---------------------------------------------------------


@dataclass
class Load:
    """What to send: a constant body, or one item (or `items` items) with
    fresh random `inputs` in every request."""

    path: str
    method: str = "POST"
    body: bytes | None = None
    items: int = 0  # 0: one item per request; n: {"items": [n items]}
    inputs: Inputs | None = None  # for bodies that vary

    @property
    def varies(self) -> bool:
        return self.method == "POST" and self.body is None


@dataclass
class Result:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_SCRIPT = """
local method, path = "%(method)s", "%(path)s"
local items, limit = %(items)d, %(limit)d
local varies = %(varies)s
local body = [==[%(body)s]==]
local headers = {["Content-Type"] = "application/json"}
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 1))
  sent = 0
  if body == "" then body = nil end
  static = wrk.format(method, path, headers, body)
end

%(one)s

function request()
  sent = sent + 1
  if sent >= limit then wrk.thread:stop() end
  if not varies then return static end
  if items == 0 then return wrk.format(method, path, headers, one()) end
  local parts = {}
  for i = 1, items do parts[i] = one() end
  return wrk.format(
    method, path, headers, '{"items":[' .. table.concat(parts, ",") .. ']}'
  )
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"us":%%d,"errors":%%d,"p50":%%.0f,"p99":%%.0f}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99)
  ))
end
"""


def lua_one(inputs: Inputs | None) -> str:
    """The Lua function `one()` that writes an item of random inputs."""
    if inputs is None:  # a constant body
        return "local function one() return nil end"
    values = ", ".join(
        f"{low!r} + {high - low!r} * r()"
        for low, high in zip(inputs.low, inputs.high)
    )
    return (
        f"local item = '{inputs.item_format()}'\n"
        "local function one()\n"
        "  local r = math.random\n"
        f"  return string.format(item, {values})\n"
        "end"
    )


def run_wrk(port, load, concurrency, seconds, max_requests) -> Result:
    """wrk counts whole seconds: durations round to at least 1 s."""
    script = WRK_SCRIPT % {
        "method": load.method,
        "path": load.path,
        "items": load.items,
        "limit": max_requests,
        "varies": "true" if load.varies else "false",
        "body": (load.body or b"").decode(),
        "one": lua_one(load.inputs),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        output = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
            + ["--timeout", "5s", "-s", file.name]
            + [f"http://127.0.0.1:{port}{load.path}"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        ).stdout
    match = re.search(r"^BENCH (.*)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk gave no summary:\n{output}")
    figures = json.loads(match.group(1))
    return Result(
        figures["requests"],
        figures["us"] / 1e6,
        figures["errors"],
        figures["p50"] / 1e3,
        figures["p99"] / 1e3,
    )


def run_hey(port, load, concurrency, seconds, max_requests) -> Result:
    """hey sends one constant body; it is time-limited (-z) only, so the
    count limit cuts its per-request records."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency)]
    command += ["-cpus", "1", "-m", load.method, "-o", "csv"]
    if load.body is not None:
        command += ["-T", "application/json", "-d", load.body.decode()]
    command.append(f"http://127.0.0.1:{port}{load.path}")
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    rows = [line.split(",") for line in output.splitlines()[1:] if line]
    rows = rows[:max_requests]
    latencies = [float(row[0]) for row in rows]
    errors = sum(not row[6].startswith("2") for row in rows)
    elapsed = max(
        (float(row[7]) + float(row[0]) for row in rows), default=seconds
    )
    return Result(
        len(rows),
        elapsed,
        errors,
        percentile(latencies, 50) * 1e3,
        percentile(latencies, 99) * 1e3,
    )


def request_maker(load: Load) -> Callable[[], bytes]:
    generator = random.Random()

    def one() -> str:
        return load.inputs.item(generator)

    def with_body(body: bytes) -> bytes:
        return (
            f"{load.method} {load.path} HTTP/1.1\r\nHost: bench\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    if not load.varies:
        static = with_body(load.body or b"")
        return lambda: static
    if load.items == 0:
        return lambda: with_body(one().encode())

    def batch() -> bytes:
        return with_body(load.inputs.batch(generator, load.items).encode())

    return batch


async def python_load(port, load, concurrency, seconds, max_requests):
    """A minimal keep-alive HTTP/1.1 client, one coroutine per connection."""
    make_request = request_maker(load)
    latencies: list[float] = []
    errors = 0
    budget = max_requests
    length = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
    start = time.perf_counter()
    deadline = start + seconds

    async def connection():
        nonlocal errors, budget
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and budget > 0:
                budget -= 1
                request = make_request()
                sent = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(length.search(head).group(1)))
                latencies.append(time.perf_counter() - sent)
                errors += not head.startswith(b"HTTP/1.1 2")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return Result(
        len(latencies),
        time.perf_counter() - start,
        errors,
        percentile(latencies, 50) * 1e3,
        percentile(latencies, 99) * 1e3,
    )


def run_python(port, load, concurrency, seconds, max_requests) -> Result:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(python_load(port, load, concurrency, seconds, max_requests))


def pick_tool(wanted: str) -> Callable[[Load], Callable]:
    """The generator for a load: wrk for all, else hey for constant bodies."""
    have = {name: shutil.which(name) is not None for name in ("wrk", "hey")}
    if wanted != "auto" and wanted != "python" and not have[wanted]:
        raise SystemExit(f"{wanted} is not installed; try --tool python.")

    def tool_for(load: Load) -> Callable:
        if wanted in ("auto", "wrk") and have["wrk"]:
            return run_wrk
        if wanted in ("auto", "hey") and have["hey"] and not load.varies:
            return run_hey
        return run_python

    return tool_for


WARM_UP_REQUESTS = 2000


# --- figures, targets, report ------------------------------------------------


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratio: float | None = None  # to the in-process limit
    target: str = ""
    passed: bool | None = None
    errors: int = 0
    rounds: list[dict] = field(default_factory=list)  # each round's figures


def combine(name: str, rounds: list[tuple[Result, float]], items=1):
    """One figure from the rounds of a load point, each round as
    (result, the limit measured in that round): the median throughput and
    ratio to the limit, the median p50 and the worst p99."""
    each = [
        {
            "value": result.per_s * items,
            "ratio": result.per_s * items / limit,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "errors": result.errors,
        }
        for result, limit in rounds
    ]
    return Figure(
        name,
        median(r["value"] for r in each),
        "items/s" if items > 1 else "req/s",
        median(r["p50_ms"] for r in each),
        max(r["p99_ms"] for r in each),
        median(r["ratio"] for r in each),
        errors=sum(r["errors"] for r in each),
        rounds=each,
    )


def rate_figure(name: str, rounds: list[tuple[float, float]]) -> Figure:
    """A figure measured in-process, from (items/s, the round's limit)."""
    each = [{"value": v, "ratio": v / limit} for v, limit in rounds]
    return Figure(
        name,
        median(r["value"] for r in each),
        "items/s",
        ratio=median(r["ratio"] for r in each),
        rounds=each,
    )


def paired_ratio(figure: Figure, other: Figure) -> float:
    """figure / other, as the limit ratios are: the median of each round's
    ratio, both measured in that round (the machine's speed changes between
    rounds, and the ratio of two medians can mix a fast round with a slow)."""
    return median(
        mine["value"] / theirs["value"]
        for mine, theirs in zip(figure.rounds, other.rounds, strict=True)
    )


def rounded_down(value: float, digits: int) -> str:
    """`value` to `digits` decimals, rounded down: a ratio just under its
    target (0.8996 against 0.9) must not print as the target."""
    if not math.isfinite(value):  # no naive figure: nan
        return f"{value:.{digits}f}"
    # From the float's shortest text, not its binary value: 1.15 * 100 is
    # 114.99999999999999, which would floor to "1.14".
    step = Decimal(1).scaleb(-digits)
    return f"{Decimal(repr(value)).quantize(step, rounding=ROUND_FLOOR):f}"


def judge(figures: dict[str, Figure], limit: dict[str, float]) -> None:
    """Set target and passed on the figures the issue sets targets for."""

    def check(name, target, passed):
        if name in figures:
            figures[name].target = target
            figures[name].passed = bool(passed)

    predict = figures.get(PREDICT)
    naive = figures.get(NAIVE)
    if predict is not None:
        vs_naive = paired_ratio(predict, naive) if naive else float("nan")
        check(
            PREDICT,
            f">=0.6x limit, >=3x naive ({rounded_down(vs_naive, 2)}x), "
            "p99<=15ms",
            predict.ratio >= 0.6
            and (naive is None or vs_naive >= 3)
            and predict.p99_ms <= 15,
        )
    if BATCH in figures:
        check(BATCH, ">=0.4x limit (batch 256)", figures[BATCH].ratio >= 0.4)
    if CACHED in figures and HEALTH in figures:
        share = paired_ratio(figures[CACHED], figures[HEALTH])
        shown = rounded_down(share, 3)
        check(CACHED, f">=0.9x /health ({shown}x)", share >= 0.9)
    if COLD_START in figures:
        check(COLD_START, "<=2 s", figures[COLD_START].value <= 2.0)
    # The floors: the app without HTTP, and HTTP without the app.
    if POST_FLOOR in figures and HEALTH_FLOOR in figures:
        share = paired_ratio(figures[POST_FLOOR], figures[HEALTH_FLOOR])
        figures[POST_FLOOR].target = (
            f"({rounded_down(share, 3)}x its /health: the cached ceiling)"
        )
    if BATCH_APP in figures:
        figures[BATCH_APP].target = "(the app without HTTP)"
    if BATCH_FLOOR in figures:
        figures[BATCH_FLOOR].target = "(HTTP without the app)"


def table(figures: list[Figure], limit: dict[str, float]) -> str:
    def number(value, digits=0):
        return "-" if value is None else f"{value:,.{digits}f}"

    def ratio(value):  # rounded down, as in the targets: 0.3996 is no 0.40
        return "-" if value is None else rounded_down(value, 2)

    lines = [
        f"limit (in-process, 1 thread): {limit['single_per_s']:,.0f} "
        f"predictions/s at batch 1, {limit['batch_items_per_s']:,.0f} "
        f"items/s at batch {BATCH_ITEMS}",
    ]
    if len(limit.get("rounds", ())) > 1:
        lines.append(
            f"  (the median of {len(limit['rounds'])} rounds; each figure "
            "below: the median of its rounds, each against its round's "
            "limit, /health or naive; p99: the worst round)"
        )
    lines += [
        f"{'figure':<36} {'value':>10} {'unit':<7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'x limit':>7}  {'target':<8} result",
    ]
    for f in figures:
        verdict = {None: "", True: "pass", False: "MISS"}[f.passed]
        errors = f"  ({f.errors} errors)" if f.errors else ""
        lines.append(
            f"{f.name:<36} {number(f.value, 2 if f.unit == 's' else 0):>10}"
            f" {f.unit:<7} {number(f.p50_ms, 2):>7} {number(f.p99_ms, 2):>7}"
            f" {ratio(f.ratio):>7}  {verdict:<4} {f.target}{errors}"
        )
    return "\n".join(lines)


def plot(figures: list[Figure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    rated = [f for f in figures if f.ratio is not None]
    timed = [f for f in figures if f.p99_ms is not None]
    fig, (left, right) = pyplot.subplots(
        1, 2, figsize=(13, 0.45 * len(rated) + 1.5)
    )
    colours = [
        {True: "tab:green", False: "tab:red"}.get(f.passed, "tab:blue")
        for f in rated
    ]
    left.barh([f.name for f in rated], [f.ratio for f in rated], color=colours)
    left.axvline(1.0, color="black", linewidth=0.8)
    left.set_xlabel("throughput / in-process limit")
    left.invert_yaxis()
    right.barh([f.name for f in timed], [f.p99_ms for f in timed])
    right.axvline(15, color="tab:red", linestyle="--", linewidth=0.8)
    right.set_xlabel("p99 latency (ms); dashed: 15 ms target")
    right.set_xscale("log")
    right.xaxis.set_minor_formatter(ticker.NullFormatter())
    right.invert_yaxis()
    fig.suptitle("make bench: service vs the model's own speed (1 worker)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot.close(fig)


def write_report(figures, limit, out: Path, run: dict) -> None:
    """The same figures as the table, as JSON and as a plot."""
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        **run,
        "limit": limit,
        "figures": [asdict(f) for f in figures],
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(figures, out / "bench.png")


# --- the run -----------------------------------------------------------------


def import_torch_seconds() -> float:
    """A bare `import torch` in a fresh interpreter: the floor under the
    cold start that no serving code can lower."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import os, torch; os._exit(0)"], check=True
    )
    return time.perf_counter() - start


def cold_start_seconds(artifacts: Path) -> float:
    """Process start to /ready of `make production`, alone on the machine
    (a server started next to a running one shares the cores with it)."""
    with serve(APP, artifacts) as server:
        return server.cold_start_s


def seconds_figure(name: str, measure: Callable[[], float], times: int):
    """The median of `times` measurements, one at a time: a single start
    moves by half a second with the machine."""
    each = [measure() for _ in range(times)]
    rounds = [{"value": value} for value in each]
    return Figure(name, median(each), "s", rounds=rounds)


@dataclass
class Point:
    """A load point: the server that answers it and what it is sent."""

    name: str
    server: str  # a key of servers()
    load: Load
    concurrency: int
    items: int = 1  # items per request; over 1: against the batch limit


def points(inputs: Inputs) -> list[Point]:
    from .api.schemas import EXAMPLE

    one = Load("/predict", inputs=inputs)
    batch = Load("/batch-predict", items=BATCH_ITEMS, inputs=inputs)
    same = json.dumps(EXAMPLE, separators=(",", ":")).encode()
    singles = [
        Point(f"/predict c={c} batching {batching}", batching, one, c)
        for batching in ("on", "off")
        for c in CONCURRENCIES
    ]
    health = Load("/health", method="GET")
    return [
        *singles[:3],
        Point(BATCH, "on", batch, BATCH_CONCURRENCY, BATCH_ITEMS),
        Point(BATCH_FLOOR, "floor", batch, BATCH_CONCURRENCY, BATCH_ITEMS),
        Point(CACHED, "on", Load("/predict", body=same), 64),
        Point(HEALTH, "on", health, 64),
        Point(POST_FLOOR, "floor", Load("/predict", body=same), 64),
        Point(HEALTH_FLOOR, "floor", health, 64),
        *singles[3:],
        Point(NAIVE, "naive", one, 64),
        Point(BATCH_LOGGED, "logged", batch, BATCH_CONCURRENCY, BATCH_ITEMS),
    ]


def servers(log_folder: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The servers under test, as (app, environment)."""
    return {
        "on": (APP, {"MICRO_BATCHING": "true"}),
        "off": (APP, {"MICRO_BATCHING": "false"}),
        "naive": (f"{PACKAGE}.bench:naive_app()", {}),
        "floor": (f"{PACKAGE}.bench:floor_app()", {}),
        # The prediction log, on in `make production` and in the image.
        "logged": (APP, {"PREDICTION_LOG": f"{log_folder}/log.jsonl"}),
    }


def run_bench(
    artifacts: Path,
    seconds: float,
    tool: str = "auto",
    max_requests: int = 1_000_000,
    rounds: int = ROUNDS,
    naive: bool = True,
) -> tuple[dict, list[Figure]]:
    """The cold start first (`rounds` starts, each alone), then every
    server is started; then each round measures the limit and every load
    point for 1/rounds of `seconds`. Shared machines change speed within a
    minute: each round's figures are compared with that round's limit."""
    settings = get_settings().model_copy(update={"artifacts_dir": artifacts})
    tool_for = pick_tool(tool)
    inputs = Inputs.of(artifacts)
    plan = [p for p in points(inputs) if naive or p.server != "naive"]
    per_round = max(1.0, seconds / rounds)
    limits: list[dict[str, float]] = []
    measured: dict[str, list] = {p.name: [] for p in plan}
    app_rate, app_rounds = app_batch_rate(inputs, settings), []
    # First: it also brings torch's files into the page cache, so the cold
    # starts measure start-up work, not disk reads.
    starts = {
        IMPORT_TORCH: import_torch_seconds,
        COLD_START: lambda: cold_start_seconds(artifacts),
    }
    figures = {
        name: seconds_figure(name, measure, rounds)
        for name, measure in starts.items()
    }
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        started = {
            key: stack.enter_context(serve(app, artifacts, **env))
            for key, (app, env) in servers(folder).items()
            if any(p.server == key for p in plan)
        }
        for round_number in range(rounds):
            limit = measure_limit(inputs, LIMIT_SECONDS, settings)
            limits.append(limit)
            app_rounds.append(
                (app_rate(LIMIT_SECONDS), limit["batch_items_per_s"])
            )
            for p in plan:
                run, port = tool_for(p.load), started[p.server].port
                if round_number == 0:
                    run(port, p.load, p.concurrency, 1, WARM_UP_REQUESTS)
                result = run(
                    port, p.load, p.concurrency, per_round, max_requests
                )
                of = "batch_items_per_s" if p.items > 1 else "single_per_s"
                measured[p.name].append((result, limit[of]))
    for p in plan:
        figures[p.name] = combine(p.name, measured[p.name], p.items)
        if p.name == BATCH:
            figures[BATCH_APP] = rate_figure(BATCH_APP, app_rounds)
    limit = {key: median(each[key] for each in limits) for key in limits[0]}
    judge(figures, limit)
    # The headline, the cold start, then the rest as measured.
    first = [PREDICT, NAIVE, COLD_START, IMPORT_TORCH]
    ranked = [figures[n] for n in first if n in figures] + [
        f for n, f in figures.items() if n not in first
    ]
    return {**limit, "rounds": limits}, ranked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds per load point, over all rounds (default 5)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"rounds over all load points (default {ROUNDS})",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=1_000_000,
        help="requests per load point at most",
    )
    parser.add_argument(
        "--tool", choices=["auto", "wrk", "hey", "python"], default="auto"
    )
    parser.add_argument(
        "--artifacts", type=Path, default=get_settings().artifacts_dir
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a target is missed",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    limit, figures = run_bench(
        args.artifacts,
        args.duration,
        args.tool,
        args.max_requests,
        args.rounds,
    )
    print(table(figures, limit))
    run = {"duration_s": args.duration, "rounds": args.rounds}
    write_report(figures, limit, args.out, {**run, "tool": args.tool})
    print(f"Wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}.")
    failed = [f"{f.name} ({f.errors})" for f in figures if f.errors]
    if failed:  # figures of failed requests are not the service's
        print("Requests failed at: " + ", ".join(failed), file=sys.stderr)
        return 1
    missed = [f.name for f in figures if f.passed is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
