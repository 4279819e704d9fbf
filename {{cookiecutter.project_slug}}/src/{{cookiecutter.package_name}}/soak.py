"""Soak: a steady mixed load on the production server, memory watched.

`make soak` starts the server as `make production` does (gunicorn, uvicorn
workers, $WEB_CONCURRENCY of them) on a free loopback port, then keeps
`--concurrency` keep-alive clients busy for `--duration` seconds with a mix
of requests: new flowers (micro-batched), repeated ones (cache hits),
batches, probes and invalid bodies that must get their 4xx. It reads the
workers' resident memory from /proc every second.

It fails (exit 1) when any request got another status than expected or no
answer at all, or when memory still grows at the end: the caches and the
drift window are bounded, so over the last third of the run the workers'
RSS must stay within 5% of where it was when that third began. Finally it
stops the server with SIGTERM, which must exit 0.

    make soak                      # 60 s at concurrency 64
    SOAK_DURATION_S=20 make soak   # or: python -m <package>.soak --help
"""

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .api.schemas import FEATURES, refused
from .bench import Inputs
from .local_server import (
    HOST,
    free_port,
    kill_group,
    loopback_env,
    start_production,
    stop_production,
)
from .settings import get_settings

MAX_GROWTH = 0.05  # over the last third of the run
STOP_TIMEOUT_S = 10  # a graceful stop at the end, before SIGKILL
REQUEST_TIMEOUT_S = 15.0
# Refused, reset, cut short, timed out or garbled: a failed request.
NO_ANSWER = (OSError, EOFError, TimeoutError, ValueError, IndexError)


def raw_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Reply:
    status: int
    body: bytes
    closed: bool  # the server said `Connection: close`


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One HTTP/1.1 response; our server always sends Content-Length."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    status = int(status_line.split()[1])
    length, closed = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            closed = value == "close"
    return Reply(status, await reader.readexactly(length), closed)


class Connection:
    """A keep-alive connection over asyncio streams: no client library to
    make the load generator the bottleneck."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body=b"") -> Reply:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                HOST, self.port
            )
        try:
            self.writer.write(raw_request(method, path, body))
            reply = await read_reply(self.reader)
        except BaseException:
            self.close()
            raise
        if reply.closed:
            self.close()
        return reply

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def fetch(port: int, method: str, path: str, body=b"") -> Reply:
    """One request on a connection of its own."""
    connection = Connection(port)
    try:
        return await connection.request(method, path, body)
    finally:
        connection.close()


def rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it exited between the listing and the reading
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The parent pid is the 2nd field after the `(name)` field.
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if int(parent) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


class Server:
    """The production server (gunicorn + uvicorn workers) in a subprocess,
    on a free loopback port; always stopped on exit."""

    def __init__(self, log_path: Path, **env: str):
        self.port = free_port()
        self.log_path = log_path
        self.env = loopback_env(self.port, **env)
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        with open(self.log_path, "wb") as log:
            self.process = start_production(
                env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited ({self.process.returncode}):\n"
                    + self.log()[-3000:]
                )
            try:
                probe = fetch(self.port, "GET", "/ready")
                if asyncio.run(probe).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        log = self.log()[-3000:]
        raise TimeoutError(f"not ready in {timeout_s} s:\n{log}")

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, then the exit code; SIGKILL if it overstays."""
        if not stop_production(self.process, timeout_s):
            raise subprocess.TimeoutExpired(self.process.args, timeout_s)
        return self.process.returncode

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        stop_production(self.process, STOP_TIMEOUT_S)
        kill_group(self.process)  # and any worker left behind


@dataclass
class Mix:
    """Request bodies drawn from one seeded generator, each with the status
    it must get."""

    inputs: Inputs
    max_batch_items: int
    max_body_bytes: int
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def __post_init__(self):
        self.repeated = [self.item() for _ in range(16)]

    def item(self) -> dict:
        return dict(zip(FEATURES, self.inputs.row(self.rng)))

    def invalid_item(self) -> dict:
        """An item with one value of a wrong type, or beyond a bound."""
        item, name = self.item(), self.rng.choice(FEATURES)
        wrong = [*refused(name).values(), str(item[name]), None, True]
        item[name] = self.rng.choice(wrong)
        return item

    def next(self) -> tuple[str, str, object, int]:
        """(method, path, body as JSON or bytes, the status it must get)."""
        roll, batch = self.rng.random(), "/batch-predict"
        if roll < 0.45:
            return "POST", "/predict", self.item(), 200
        if roll < 0.65:
            return "POST", "/predict", self.rng.choice(self.repeated), 200
        if roll < 0.80:
            size = self.rng.randint(1, 64)
            pool = [self.item() for _ in range(size)] + self.repeated
            return "POST", batch, {"items": self.rng.sample(pool, size)}, 200
        if roll < 0.85:
            return "GET", self.rng.choice(["/health", "/ready"]), b"", 200
        if roll < 0.93:
            return "POST", "/predict", self.invalid_item(), 422
        if roll < 0.97:
            broken = self.rng.choice([b"{", b"", b"[]", b'{"items": []}'])
            return "POST", "/predict", broken, 422
        if roll < 0.995:
            items = [self.item(), self.invalid_item()]
            return "POST", batch, {"items": items}, 422
        if roll < 0.999:
            items = [self.item()] * (self.max_batch_items + 1)
            return "POST", batch, {"items": items}, 422
        return "POST", "/predict", b" " * (self.max_body_bytes + 1), 413


@dataclass
class Tally:
    requests: int = 0
    failures: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)


async def client(port: int, mix: Mix, tally: Tally, stop_at: float, limit):
    connection = Connection(port)
    while time.monotonic() < stop_at and tally.requests < limit:
        method, path, body, expected = mix.next()
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        tally.requests += 1
        try:
            reply = await asyncio.wait_for(
                connection.request(method, path, body), REQUEST_TIMEOUT_S
            )
        except NO_ANSWER as error:
            tally.failures[f"{path}: {error.__class__.__name__}"] += 1
            continue
        tally.statuses[f"{path} {reply.status}"] += 1
        if reply.status != expected:
            tally.failures[f"{path}: {reply.status}, not {expected}"] += 1
    connection.close()


async def sample_memory(server: Server, samples: list, stop_at: float):
    while time.monotonic() < stop_at:
        samples.append(sum(rss_bytes(pid) for pid in server.workers()))
        await asyncio.sleep(1)


async def load(server, mix, duration_s, concurrency, max_requests):
    tally, samples = Tally(), []
    stop_at = time.monotonic() + duration_s
    clients = [
        client(server.port, mix, tally, stop_at, max_requests)
        for _ in range(concurrency)
    ]
    await asyncio.wait_for(
        asyncio.gather(sample_memory(server, samples, stop_at), *clients),
        duration_s + 2 * REQUEST_TIMEOUT_S,
    )
    return tally, samples


def memory_growth(samples: list[int]) -> float:
    """Growth over the last third: its peak against where it began."""
    last_third = samples[len(samples) * 2 // 3 :]
    return max(last_third) / last_third[0] - 1


def soak(duration_s: float, concurrency: int, max_requests: int) -> dict:
    settings = get_settings()
    inputs = Inputs.of(settings.artifacts_dir)
    mix = Mix(inputs, settings.max_batch_items, settings.max_body_bytes)
    with tempfile.TemporaryDirectory() as folder:
        with Server(Path(folder) / "server.log") as server:
            server.wait_ready()
            workers = server.workers()
            started = time.monotonic()
            tally, samples = asyncio.run(
                load(server, mix, duration_s, concurrency, max_requests)
            )
            elapsed = time.monotonic() - started
            exit_code = server.terminate(timeout_s=30)
            log = server.log()
    mib = 1 / 2**20
    return {
        "duration_s": round(elapsed, 1),
        "concurrency": concurrency,
        "workers": len(workers),
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / elapsed),
        "failures": sum(tally.failures.values()),
        "failure_kinds": dict(tally.failures.most_common(10)),
        "statuses": dict(sorted(tally.statuses.items())),
        "rss_mib": {
            "start": round(samples[0] * mib, 1),
            "middle": round(samples[len(samples) // 2] * mib, 1),
            "end": round(samples[-1] * mib, 1),
        },
        "rss_growth_last_third": round(memory_growth(samples), 4),
        "server_exit_code": exit_code,
        "server_errors": [
            line for line in log.splitlines() if "[ERROR]" in line
        ][:10],
    }


def verdict(report: dict) -> list[str]:
    problems = []
    if report["failures"]:
        problems.append(
            f"{report['failures']} failed requests: {report['failure_kinds']}"
        )
    if report["rss_growth_last_third"] >= MAX_GROWTH:
        problems.append(
            f"worker memory still grows: +"
            f"{report['rss_growth_last_third']:.1%} over the last third "
            f"(limit {MAX_GROWTH:.0%})"
        )
    if report["server_exit_code"] != 0:
        problems.append(
            f"the server exited {report['server_exit_code']} on SIGTERM"
        )
    return problems


def main(argv=None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=float(env("SOAK_DURATION_S", 60)),
        help="seconds of load (env SOAK_DURATION_S; default 60)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(env("SOAK_CONCURRENCY", 64)),
        help="clients, one connection each (env SOAK_CONCURRENCY)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=10_000_000,
        help="stop after this many requests even if time is left",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("reports/soak.json"),
        help="also write the figures here (default reports/soak.json)",
    )
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").is_file():
        parser.error("it reads memory from /proc: run it on Linux")
    report = soak(args.duration, args.concurrency, args.max_requests)
    print(json.dumps(report, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    problems = verdict(report)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if not problems:
        rss = report["rss_mib"]
        print(
            f"OK: {report['requests']} requests, 0 failures, worker RSS "
            f"{rss['start']} -> {rss['middle']} -> {rss['end']} MiB"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
