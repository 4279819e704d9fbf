"""A bounded, rotated JSON-lines log of inputs and predictions.

Off unless PREDICTION_LOG is set. `make drift-report` reads it. When the
file passes `max_bytes` it becomes `<name>.1` (one old file kept), so the
disk use stays near twice `max_bytes` (plus one buffer per worker).

Several workers share the file. Each buffers its lines and appends them
with one `os.write` on an O_APPEND descriptor (whole lines, never mixed
with another worker's), at least once a second, and a second after the
last request when traffic stops (`flush_every`). Rotation happens under a
file lock; a worker whose file was rotated by another reopens the new one
on its next flush.

A log that cannot be written (disk full, a read-only volume, its folder
removed) never fails a prediction: the lines of that flush are dropped and
counted (`prediction_log_dropped_lines_total`), with a warning at most once
a minute, and the next flush tries again.
"""

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import orjson

from ..json_rows import join_all, member_keys, number_members, number_texts
from . import metrics

FLUSH_BYTES = 64 * 1024
FLUSH_S = 1.0
WARN_EVERY_S = 60.0
log = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, path: Path, features: Sequence[str], max_bytes: int):
        self.path = Path(path)
        self.rotated = self.path.with_name(self.path.name + ".1")
        self.features = list(features)
        self.keys = member_keys(self.features)
        self.max_bytes = max_bytes
        # Small next to max_bytes: a file overshoots by one buffer a worker.
        self.flush_bytes = min(FLUSH_BYTES, max_bytes // 16)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._flushed_at = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._warned_at = -WARN_EVERY_S

    def flush_every(self, seconds: float = FLUSH_S) -> None:
        """On the running loop: lines written before traffic stopped reach
        the file (and `make drift-report`) within about `seconds` too."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a script): writes and close() flush

        def tick():
            try:
                if time.monotonic() - self._flushed_at >= seconds:
                    self.flush()
            finally:  # whatever happened, the next tick comes
                self._timer = loop.call_later(seconds, tick)

        self._timer = loop.call_later(seconds, tick)

    def _open(self) -> int:
        return os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )

    def write(self, rows: Sequence[tuple], encoded: Sequence[bytes]):
        """Request path: the lines joined from pieces (json_rows), a
        syscall now and then."""
        lines = self.lines(rows, encoded, time.time())
        self._buffer.append(lines)
        self._buffered += len(lines)
        if (
            self._buffered >= self.flush_bytes
            or time.monotonic() - self._flushed_at >= FLUSH_S
        ):
            self.flush()

    def lines(self, rows: Sequence[tuple], encoded, ts: float) -> bytes:
        """`{"ts":..,"inputs":{feature: value, ..},"prediction":..}` and a
        line break for every row."""
        numbers = number_texts(list(chain.from_iterable(rows)))
        columns = [b'{"ts":' + orjson.dumps(ts) + b',"inputs":{']
        columns += number_members(self.keys, numbers)
        columns += [b'},"prediction":', encoded, b"}\n"]
        return join_all(columns, len(rows))

    def flush(self) -> None:
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._flushed_at = time.monotonic()
        try:
            if data:
                if self._rotated_away():
                    self._reopen()  # another worker rotated: follow it
                self._write_all(data)
            if self._fd >= 0 and os.fstat(self._fd).st_size >= self.max_bytes:
                self._rotate()
        except OSError as error:
            self._dropped(data, error)

    def _write_all(self, data: bytes) -> None:
        """os.write may write part (a disk filling up): the rest, or the
        OSError that says why not."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _dropped(self, data: bytes, error: OSError) -> None:
        lines = data.count(b"\n")
        metrics.PREDICTION_LOG_DROPPED.inc(lines)
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "Prediction log %s not written (%s): %d lines dropped; "
                "predictions are served as usual.",
                self.path,
                error,
                lines,
            )

    def _reopen(self) -> None:
        """A descriptor for `path` again; -1 until that works (a closed
        number must not stay in _fd: the next open file would reuse it)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        self._fd = self._open()

    def _rotated_away(self) -> bool:
        """Our descriptor no longer names `path` (a stat per flush)."""
        if self._fd < 0:
            return True
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return True
        current = os.fstat(self._fd)
        return (on_disk.st_ino, on_disk.st_dev) != (
            current.st_ino,
            current.st_dev,
        )

    def _rotate(self) -> None:
        lock = os.open(
            self.path.with_name(self.path.name + ".lock"),
            os.O_WRONLY | os.O_CREAT,
            0o644,
        )
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Only the first worker to get here renames; the others find
            # their file already moved to .1 and just reopen the path.
            if not self._rotated_away():
                os.replace(self.path, self.rotated)
            self._reopen()
        finally:
            os.close(lock)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def log_files(path: Path) -> list[Path]:
    """The log's files, oldest first."""
    path = Path(path)
    older = path.with_name(path.name + ".1")
    return [p for p in (older, path) if p.is_file()]
