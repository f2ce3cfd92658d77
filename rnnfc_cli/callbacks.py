"""What ``train.fit`` tells the rest of rnnfc as it goes: one protocol, composed in order.

``Callback`` has a no-op method per event; a callback overrides the ones it watches (the
live display, the model-directory recorder, TensorBoard). ``CallbackList`` passes every
event to several, in the order given, as Keras's ``CallbackList`` does; ``ProgressOnly``
passes on only the progress of steps. Importing this module needs no jax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnfc_cli.train import EpochRecord, TrainSnapshot


class Callback:
    """Events of a training run; every method does nothing here."""

    def on_start(self, epochs: int, steps_per_epoch: int) -> None:
        """Training starts (or starts again): ``epochs`` at most, of ``steps_per_epoch``."""
        del epochs, steps_per_epoch

    def on_step(self, epoch: int, step_in_epoch: int) -> None:
        """A train step was dispatched."""
        del epoch, step_in_epoch

    def on_epoch(self, record: EpochRecord, params: Any) -> None:
        """An epoch finished, with its metrics and the parameters at its end."""
        del record, params

    def on_snapshot(self, snapshot: TrainSnapshot) -> None:
        """The complete train state is ready to be saved (``--resume`` continues from it)."""
        del snapshot


class CallbackList(Callback):
    """Passes every event to each of ``callbacks``, in order."""

    def __init__(self, *callbacks: Callback):
        self.callbacks = callbacks

    def on_start(self, epochs: int, steps_per_epoch: int) -> None:
        for callback in self.callbacks:
            callback.on_start(epochs, steps_per_epoch)

    def on_step(self, epoch: int, step_in_epoch: int) -> None:
        for callback in self.callbacks:
            callback.on_step(epoch, step_in_epoch)

    def on_epoch(self, record: EpochRecord, params: Any) -> None:
        for callback in self.callbacks:
            callback.on_epoch(record, params)

    def on_snapshot(self, snapshot: TrainSnapshot) -> None:
        for callback in self.callbacks:
            callback.on_snapshot(snapshot)


class ProgressOnly(Callback):
    """Passes only the progress of steps on (e.g. to a display), not epochs or snapshots."""

    def __init__(self, callback: Callback):
        self.callback = callback

    def on_start(self, epochs: int, steps_per_epoch: int) -> None:
        self.callback.on_start(epochs, steps_per_epoch)

    def on_step(self, epoch: int, step_in_epoch: int) -> None:
        self.callback.on_step(epoch, step_in_epoch)
