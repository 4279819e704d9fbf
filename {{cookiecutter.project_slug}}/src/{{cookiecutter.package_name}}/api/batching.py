"""Adaptive micro-batching for single-item requests.

Requests that arrive while the event loop is busy wait for the next loop
turn and then share one forward pass; under load the batches grow by
themselves (no timer that leaves the core idle). While the service is
idle (the last batch was one request, and none is waiting), a request is
answered at once, in its own loop turn: at concurrency 1 nothing waits,
not even a loop turn. The requests that come in the rest of that turn
wait for the next one, together. A batch never exceeds `max_batch`, so
one model call never blocks the loop for longer than one batch.

When a batch fails, it is split in halves and each half retried on a later
loop turn, down to single items: the item that fails gets its error, its
neighbours their answers, and no loop turn runs more than one model call.
"""

import asyncio
from collections.abc import Callable, Sequence

from ..monitoring import metrics

PredictRows = Callable[[Sequence[tuple]], list]
Pending = list[tuple[tuple, asyncio.Future]]


class MicroBatcher:
    def __init__(self, predict_rows: PredictRows, max_batch: int):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.predict_rows = predict_rows
        self.max_batch = max_batch
        self._pending: Pending = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = True  # the last batch was a single request

    async def predict(self, row: tuple):
        if not self._pending:
            # Once a batch, not once a request: on Python 3.11,
            # get_running_loop() is a getpid() system call.
            self._loop = asyncio.get_running_loop()
        loop = self._loop
        if self._idle and not self._flush_scheduled:
            # Waiting a loop turn for company cost a lone request about
            # 10 us (6% at concurrency 1); the flush scheduled here sends
            # whoever comes in the rest of this turn to the next, together.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
            metrics.LOCAL_BATCH_SIZE.observe(1)
            (result,) = self._predict([row])
            return result
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
        if batch:
            self._idle = len(batch) == 1
            self._run(batch)

    def _run(self, batch: Pending) -> None:
        """One model call for the batch; on failure, retry its halves."""
        live = [(row, future) for row, future in batch if not future.done()]
        if not live:  # every caller timed out or went away
            return
        metrics.LOCAL_BATCH_SIZE.observe(len(live))
        try:
            results = self._predict([row for row, _ in live])
        except Exception as error:
            if len(live) == 1:
                future = live[0][1]
                if not future.done():
                    future.set_exception(error)
                return
            loop = asyncio.get_running_loop()
            middle = len(live) // 2
            loop.call_soon(self._run, live[:middle])
            loop.call_soon(self._run, live[middle:])
            return
        for (_, future), result in zip(live, results):
            if not future.done():  # the caller may have timed out
                future.set_result(result)

    def _predict(self, rows: list[tuple]) -> list:
        results = self.predict_rows(rows)
        if len(results) != len(rows):
            raise RuntimeError(
                f"predict_rows returned {len(results)} results for "
                f"{len(rows)} rows"
            )
        return results

    @property
    def pending(self) -> int:
        return len(self._pending)
