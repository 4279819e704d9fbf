"""Adaptive micro-batching for single-item requests.

Requests that arrive while the event loop is busy wait for the next loop
turn and then share one forward pass. At concurrency 1 the batch is one
item and flushes on the very next turn, so nothing waits; under load the
batches grow by themselves (no timer that leaves the core idle). A batch
never exceeds `max_batch`, so one model call never blocks the loop for
longer than one batch.
"""

import asyncio
from collections.abc import Callable, Sequence

from ..monitoring import metrics

PredictRows = Callable[[Sequence[tuple]], list]


class MicroBatcher:
    def __init__(self, predict_rows: PredictRows, max_batch: int):
        self.predict_rows = predict_rows
        self.max_batch = max_batch
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._flush_scheduled = False

    async def predict(self, row: tuple):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((row, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        metrics.BATCH_SIZE.observe(len(batch))
        rows = [row for row, _ in batch]
        try:
            results = self.predict_rows(rows)
        except Exception:
            # One bad item must not fail its neighbours: retry one by one.
            for row, future in batch:
                self._answer_one(row, future)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():  # the caller may have timed out
                future.set_result(result)

    def _answer_one(self, row: tuple, future: asyncio.Future) -> None:
        try:
            result = self.predict_rows([row])[0]
        except Exception as error:
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(result)

    @property
    def pending(self) -> int:
        return len(self._pending)
