"""The production server in a real process (gunicorn with uvicorn workers,
as `make production` and the container run it): SIGTERM drains requests in
flight, and a model that cannot be loaded stops the start with one line."""

import asyncio
import json
{% if cookiecutter.accelerator != "gpu" -%}
import os
{% endif -%}
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from {{ cookiecutter.package_name }} import gunicorn_conf
from {{ cookiecutter.package_name }} import settings as settings_module
from {{ cookiecutter.package_name }} import soak
from {{ cookiecutter.package_name }}.gunicorn_conf import graceful_timeout
from {{ cookiecutter.package_name }}.local_server import free_port
from {{ cookiecutter.package_name }}.predict import (
    select_device,
    served_model_path,
)
from {{ cookiecutter.package_name }}.soak import (
    HOST,
    Connection,
    Server,
    fetch,
    raw_request,
    read_reply,
)

from .conftest import data_ranges

IN_FLIGHT = re.compile(r"^http_requests_in_flight (\S+)$", re.MULTILINE)
HELD = 240  # requests in flight when SIGTERM arrives
BATCH = 50  # items in each held /batch-predict


def server_for(artifacts_dir, log_path, **env: str) -> Server:
    return Server(
        log_path,
        ARTIFACTS_DIR=str(artifacts_dir),
        WEB_CONCURRENCY="1",
        LOG_LEVEL="info",
        **env,
    )


@pytest.fixture
def server(artifacts, tmp_path):
    """A server on a free port, killed at the end whatever the test did."""
    with server_for(artifacts, tmp_path / "server.log") as started:
        yield started


def flowers(rng: random.Random, count: int) -> list[dict]:
    """New measurements each time: each one needs the model (no cache)."""
    return [
        {
            name: round(rng.uniform(low, high), 6)
            for name, (low, high) in data_ranges().items()
        }
        for _ in range(count)
    ]


async def hold_requests(port: int, count: int) -> list:
    """Requests sent but for the last byte of their body: in flight on the
    server until we send it. Half /predict (through the micro-batcher),
    half /batch-predict."""
    rng, held = random.Random(6), []
    for index in range(count):
        if index % 2:
            path, body = "/predict", flowers(rng, 1)[0]
        else:
            path, body = "/batch-predict", {"items": flowers(rng, BATCH)}
        request = raw_request("POST", path, json.dumps(body).encode())
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(request[:-1])
        held.append((path, reader, writer, request[-1:]))
    return held


async def requests_in_flight(port: int) -> float:
    reply = await fetch(port, "GET", "/metrics")
    return float(IN_FLIGHT.search(reply.body.decode()).group(1))


def refuses_connections(port: int, timeout_s: float) -> bool:
    """True once a new connection is turned away. A reset counts too: the
    kernel completed our handshake into the listen queue just before the
    listening socket closed, so the server never took the connection."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), 0.5).close()
        except (ConnectionRefusedError, ConnectionResetError):
            return True
        time.sleep(0.02)
    return False


async def release(held: list) -> list:
    for _, _, writer, last_byte in held:
        writer.write(last_byte)

    async def answer(path, reader, writer, _):
        try:
            return path, await read_reply(reader)
        finally:
            writer.close()

    return await asyncio.wait_for(
        asyncio.gather(*(answer(*request) for request in held)), 30
    )


def picked_by_port_0(reuse_address: bool) -> int:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse_address)
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def test_a_free_port_is_held_until_a_server_binds_it():
    held = {free_port() for _ in range(50)}
    assert len(held) == 50
    # Nobody's port 0 gets a held port; with a port only picked, 5,000
    # picks of each kind met one of 50 about 30 times.
    for _ in range(5000):
        assert picked_by_port_0(reuse_address=False) not in held
        assert picked_by_port_0(reuse_address=True) not in held
    for port in held:  # yet a server binds it at once, as gunicorn does
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((HOST, port))
            server.listen()


def test_sigterm_finishes_requests_in_flight_then_exits_0(server):
    server.wait_ready()

    async def scenario():
        held = await hold_requests(server.port, HELD)
        deadline = time.monotonic() + 30
        # The /metrics request itself is in flight too.
        while await requests_in_flight(server.port) < HELD + 1:
            assert time.monotonic() < deadline, "requests never arrived"
            await asyncio.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        refused = refuses_connections(server.port, timeout_s=5)
        return refused, await release(held)

    stopping = time.monotonic()
    refused, answers = asyncio.run(scenario())
    exit_code = server.process.wait(graceful_timeout)

    assert refused, "new connections were still accepted after SIGTERM"
    assert [reply.status for _, reply in answers] == [200] * HELD
    for path, reply in answers:
        body = json.loads(reply.body)
        if path == "/batch-predict":
            assert len(body["predictions"]) == BATCH
        else:
            assert body["label"]
        assert reply.closed  # the server says it closes after the answer
    assert exit_code == 0, server.log()[-3000:]
    assert time.monotonic() - stopping < graceful_timeout


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_stopped_server_leaves_no_worker_behind(
    artifacts, tmp_path, monkeypatch
):
    # Killing only gunicorn's master orphans the uvicorn workers, which do
    # not notice: every server a test run started would go on running.
    monkeypatch.setattr(soak, "STOP_TIMEOUT_S", 0.5)
    # A killed master leaves its metrics folder (made in TMPDIR) behind.
    log = tmp_path / "server.log"
    with server_for(artifacts, log, TMPDIR=str(tmp_path)) as server:
        server.wait_ready()
        workers = server.workers()
        server.process.send_signal(signal.SIGSTOP)  # a master that hangs
    assert workers, server.log()[-3000:]
    deadline = time.monotonic() + 10
    while any(map(running, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(running, workers))


async def health_after_idle(port: int, idle_s: float) -> int | None:
    """/health twice on one connection, idle in between: the second
    status, or None where the server closed the connection meanwhile."""
    connection = Connection(port)
    try:
        assert (await connection.request("GET", "/health")).status == 200
        await asyncio.sleep(idle_s)
        return (await connection.request("GET", "/health")).status
    except ConnectionError:
        return None
    finally:
        connection.close()


def test_idle_connections_outlive_a_load_balancers_idle_timeout(
    artifacts, tmp_path
):
    """A load balancer keeps its connections to the server for up to its
    idle timeout (AWS ALB, ingress-nginx: 60 s); one the server closed
    first gets a request and answers the client 502. The default keeps them
    longer, and KEEPALIVE_S reaches the workers (1 s here: short to wait)."""
    assert settings_module.Settings().keepalive_s > 60
    assert (
        gunicorn_conf.keepalive == settings_module.get_settings().keepalive_s
    )
    log_path = tmp_path / "server.log"
    with server_for(artifacts, log_path, KEEPALIVE_S="1") as started:
        started.wait_ready()
        assert asyncio.run(health_after_idle(started.port, 0.2)) == 200
        assert asyncio.run(health_after_idle(started.port, 2.5)) is None


def test_the_start_up_log_holds_no_python_warning(server):
    # A GPU project on a CPU logs one line about it; torch's notices about
    # its own internals (TypedStorage, when reading int8 weights) would
    # bury it, at every start of every worker.
    server.wait_ready()
    assert not re.findall(r"\w+Warning: .*", server.log())


SMOKE_TEST = Path(__file__).parents[1] / "deploy" / "smoke-test.sh"


def test_the_deploy_smoke_test_passes_on_this_service(server):
    """deploy/smoke-test.sh, which every deploy runs on the release it
    made, passes on this service, and fails for a device it does not run
    on (a GPU release that fell back to the CPU)."""
    absent = [name for name in ("curl", "jq") if shutil.which(name) is None]
    if absent:
        pytest.skip(f"the smoke test needs {' and '.join(absent)}")
    server.wait_ready()
    ready = asyncio.run(fetch(server.port, "GET", "/ready"))
    device = json.loads(ready.body)["device"]
    other = {"cpu": "cuda", "cuda": "cpu"}[device]

    def smoke_test(device: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SMOKE_TEST), f"http://{HOST}:{server.port}", device],
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = smoke_test(device)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["label"] in answer["probabilities"]
    done = smoke_test(other)
    assert done.returncode == 1
    assert f"does not report device {other}" in done.stdout


def missing(path):
    path.unlink()


def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def wrong_shape(path):
    """The right file format, with a layer one unit wider than the model."""
    state = torch.load(path.with_name("model.pt"), weights_only=True)
    name, weight = next(iter(state.items()))
    state[name] = torch.zeros(weight.shape[0] + 1, *weight.shape[1:])
    torch.save(state, path)


def garbled(path):
    """The header kept, every number turned into text."""
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *(r.replace(".", "x") for r in rows)]))


def model_file(artifacts):
    """The weights a server started on `artifacts` loads: on a GPU machine,
    an int8 project's server reads model.pt (torchao quantizes it)."""
    settings = settings_module.Settings(artifacts_dir=artifacts)  # as served
    return served_model_path(settings, select_device(settings.device))


def drift_reference(artifacts):
    return artifacts / "reference.csv"


DAMAGES = {  # name: (which file, what happens to it)
    "missing": (model_file, missing),
    "truncated": (model_file, truncated),
    "wrong_shape": (model_file, wrong_shape),
    "missing_reference": (drift_reference, missing),
    "garbled_reference": (drift_reference, garbled),
}


@pytest.fixture(scope="module")
def broken_starts(artifacts, tmp_path_factory) -> dict:
    """Start one server per damaged artifact, all at once: each start
    imports torch, and side by side they take the time of one."""
    servers = {}
    for name, (which_file, damage) in DAMAGES.items():
        folder = tmp_path_factory.mktemp(name) / "artifacts"
        shutil.copytree(artifacts, folder)
        path = which_file(folder)
        damage(path)
        server = server_for(folder, folder.parent / "server.log")
        servers[name] = (server.start(), path)
    results = {}
    try:
        for name, (server, path) in servers.items():
            exit_code = server.process.wait(120)
            results[name] = (exit_code, server.log(), path)
    finally:
        for server, _ in servers.values():
            server.__exit__()
    return results


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_broken_artifact_stops_the_start_with_one_clear_line(
    broken_starts, damage
):
    exit_code, log, path = broken_starts[damage]

    assert exit_code != 0
    naming_the_file = [line for line in log.splitlines() if str(path) in line]
    assert len(naming_the_file) == 1, log
    assert "[ERROR] Cannot start: " in naming_the_file[0]
    # What to run; a damaged file goes first, as make goes by dates.
    fix = "run `make " if damage == "missing" else f"`rm -f {path} && make "
    assert fix in naming_the_file[0]
    assert "Traceback" not in log
{%- if cookiecutter.accelerator != "gpu" %}


@pytest.mark.parametrize(
    "cpu_max, limit",
    [("max 100000", None), ("100000 100000", 1), ("150000 100000", 1)],
)
def test_a_cgroup_cpu_limit_caps_the_default_workers(
    tmp_path, monkeypatch, cpu_max, limit
):
    """A container limited to 1.5 CPUs on a bigger host gets 1 worker."""
    file = tmp_path / "cpu.max"
    file.write_text(cpu_max + "\n")
    monkeypatch.setattr(settings_module, "CPU_MAX", file)
    cores = len(os.sched_getaffinity(0))
    assert settings_module.default_workers() == min(cores, limit or cores)


def test_no_cgroup_limit_means_every_usable_core(tmp_path, monkeypatch):
    monkeypatch.setattr(settings_module, "CPU_MAX", tmp_path / "absent")
    assert settings_module.default_workers() == len(os.sched_getaffinity(0))
{%- else %}


@pytest.mark.parametrize("gpus, workers", [(0, 1), (1, 1), (3, 3)])
def test_one_default_worker_per_gpu(monkeypatch, gpus, workers):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert settings_module.default_workers() == workers
{%- endif %}
