"""A bounded, rotated JSON-lines log of inputs and predictions.

Off unless PREDICTION_LOG is set. `make drift-report` reads it. When the
file passes `max_bytes` it becomes `<name>.1` (one old file kept), so the
disk use stays under twice `max_bytes`.
"""

from collections.abc import Sequence
from pathlib import Path

import orjson


class PredictionLog:
    def __init__(self, path: Path, features: Sequence[str], max_bytes: int):
        self.path = Path(path)
        self.features = list(features)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    def write(self, rows: Sequence[tuple], encoded: Sequence[bytes]):
        lines = b"".join(
            orjson.dumps(
                {
                    "inputs": dict(zip(self.features, row)),
                    "prediction": orjson.Fragment(prediction),
                }
            )
            + b"\n"
            for row, prediction in zip(rows, encoded)
        )
        self._file.write(lines)
        if self._file.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("ab")

    def close(self) -> None:
        self._file.close()
