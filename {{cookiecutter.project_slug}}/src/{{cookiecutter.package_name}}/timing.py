"""Throughput of a call, measured alike by `make quantize` and `make bench`."""

import time
from collections.abc import Callable


def items_per_second(
    call: Callable[[], object], items_per_call: int, seconds: float = 1.0
) -> float:
    """Run `call` repeatedly for about `seconds` (after a warm-up)."""
    for _ in range(20):
        call()
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        call()
        calls += 1
    return calls * items_per_call / (time.perf_counter() - start)
