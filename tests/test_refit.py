"""The refit after the validation run: when it runs, how long, and what it keeps."""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import jax
import numpy as np
import pytest
from flax import serialization

from rnnfc_cli import api
from rnnfc_cli.callbacks import Callback
from rnnfc_cli.config import REFIT_BELOW, TrainConfig
from rnnfc_cli.errors import TrainingInterruptedError

# A learning rate too small to make progress: patience ends the validation run long before
# the --min-steps floor would.
SETTINGS = dict(epochs=20, batch_size=8, min_steps=40, val_split=0.25, patience=2, lr=1e-5)


def _request(tiny_data, model_dir, refit, val=None, **settings) -> api.TrainRequest:
    return api.TrainRequest(
        data=str(tiny_data["train_long"]),
        model_dir=model_dir,
        model_options={"hidden": 4, "dense": (4,), "conv": "4:3", "dropout": 0.0},
        train=TrainConfig(refit=refit, **{**SETTINGS, **settings}),
        val=val,
    )


def _train(tiny_data, model_dir, refit, val=None, **settings):
    return api.train_model(_request(tiny_data, model_dir, refit, val, **settings))


def _params(model_dir):
    return serialization.msgpack_restore((model_dir / "params.msgpack").read_bytes())


def test_refit_trains_again_on_all_the_data_and_keeps_the_last_weights(tiny_data, tmp_path):
    # Before a refit the validation run stops on patience alone (the refit takes the
    # --min-steps floor), so it is the run without refit and without the floor.
    off = _train(tiny_data, tmp_path / "off", "off", min_steps=0)
    on = _train(tiny_data, tmp_path / "on", "on")
    assert off["refit_epochs"] is None
    assert off["steps"] < SETTINGS["min_steps"]  # the floor would have kept it going
    sequences = off["train_data"]["sequences"] + off["val_data"]["sequences"]
    for_min_steps = math.ceil(SETTINGS["min_steps"] / math.ceil(sequences / 8))
    assert on["refit_epochs"] == min(SETTINGS["epochs"], max(on["best_epoch"], for_min_steps))
    # The validation runs are the same; their held-out scores are what both report.
    for key in ("best_epochs", "best_val_accuracy", "best_val_loss", "epochs_run"):
        assert on[key] == off[key]
    assert on["steps"] == off["steps"] + on["refit_epochs"] * math.ceil(sequences / 8)
    validation = json.loads((tmp_path / "on" / "validation.json").read_text())
    assert validation == json.loads((tmp_path / "off" / "validation.json").read_text())
    # The saved weights are the refit's, not the validation run's best.
    differ = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), _params(tmp_path / "on"), _params(tmp_path / "off")
    )
    assert all(jax.tree.leaves(differ))


def test_auto_refits_small_held_out_sets_and_never_with_a_validation_file(tiny_data, tmp_path):
    held_out = _train(tiny_data, tmp_path / "auto", "auto")
    assert held_out["val_data"]["sequences"] < REFIT_BELOW
    assert held_out["refit_epochs"] is not None
    given = _train(tiny_data, tmp_path / "given", "on", val=str(tiny_data["test_long"]))
    assert given["refit_epochs"] is None


class _StopInRefit(Callback):
    """Sets the stop event (as a Ctrl-C would) in the refit's second epoch."""

    def __init__(self, stop: threading.Event):
        self.stop, self.starts = stop, 0

    def on_start(self, epochs: int, steps_per_epoch: int) -> None:
        del epochs, steps_per_epoch
        self.starts += 1

    def on_step(self, epoch: int, step_in_epoch: int) -> None:
        del step_in_epoch
        if self.starts == 2 and epoch == 2:
            self.stop.set()


def test_a_run_stopped_in_its_refit_resumes_to_the_same_model(tiny_data, tmp_path):
    whole = _train(tiny_data, tmp_path / "whole", "on")
    stop = threading.Event()
    request = dataclasses.replace(
        _request(tiny_data, tmp_path / "m", "on"), stop=stop, checkpoint_every=0.0
    )
    with pytest.raises(TrainingInterruptedError):
        api.train_model(request, _StopInRefit(stop))
    resumed = api.train_model(dataclasses.replace(request, stop=None, resume=True))
    assert resumed["refit_epochs"] == whole["refit_epochs"]
    same = jax.tree.map(np.array_equal, _params(tmp_path / "whole"), _params(tmp_path / "m"))
    assert all(jax.tree.leaves(same))
