"""Epoch timing through ``rnnfc_cli.train.fit``'s callbacks, shared by the benchmarks."""

from __future__ import annotations

from typing import Any

from rnnfc_cli.callbacks import Callback
from rnnfc_cli.train import EpochRecord


class EpochTimes(Callback):
    """Records each epoch's wall time and the number of steps in an epoch."""

    def __init__(self):
        self.seconds: list[float] = []
        self.steps_per_epoch = 0

    def on_start(self, epochs: int, steps_per_epoch: int) -> None:
        del epochs
        self.steps_per_epoch = steps_per_epoch

    def on_epoch(self, record: EpochRecord, params: Any) -> None:
        del params
        self.seconds.append(record.seconds)
