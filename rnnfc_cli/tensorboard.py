"""``rnnfc train --tensorboard DIR``: each epoch's metrics as TensorBoard scalars.

Written with tensorboardX (the optional ``tensorboard`` extra), which writes TensorBoard's
event files without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnfc_cli.callbacks import Callback
from rnnfc_cli.errors import MissingExtraError

if TYPE_CHECKING:
    from rnnfc_cli.train import EpochRecord

SCALARS = {
    "loss/train": "train_loss",
    "loss/val": "val_loss",
    "accuracy/train": "train_accuracy",
    "accuracy/val": "val_accuracy",
    "time/epoch_seconds": "seconds",
}


class TensorBoardLogger(Callback):
    """Writes ``SCALARS`` at every finished epoch (the step is the epoch number)."""

    def __init__(self, directory: Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise MissingExtraError(
                "--tensorboard writes with tensorboardX, which is not installed: "
                "pip install 'rnnfc[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(logdir=str(directory), flush_secs=10)

    def on_epoch(self, record: EpochRecord, params: Any) -> None:
        del params
        for tag, field in SCALARS.items():
            self.writer.add_scalar(tag, getattr(record, field), record.epoch)
        self.writer.add_scalar("best/improved", float(record.improved), record.epoch)

    def close(self) -> None:
        self.writer.close()
