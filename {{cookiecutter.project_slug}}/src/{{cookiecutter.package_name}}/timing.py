"""Throughput and latency figures, computed alike by `make quantize` and
`make bench`."""

import time
from collections.abc import Callable, Sequence


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


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]
