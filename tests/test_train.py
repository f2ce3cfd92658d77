"""Training: one step moves every parameter, seeds reproduce, early stopping keeps the best."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import TINY_MODEL, make_sequences, padded

from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.models import build_model
from rnnfc_cli.train import (
    ArraySet,
    Batch,
    create_train_state,
    fit,
    make_logits_fn,
    predict_proba,
    train_step,
)


def _arrays(n=24, seed=0) -> ArraySet:
    sequences, labels = make_sequences(n, seed=seed)
    return ArraySet(
        inputs=np.nan_to_num(padded(sequences)).astype(np.float32),
        lengths=np.array([len(s) for s in sequences], np.int32),
        labels=np.array([0 if label == "up" else 1 for label in labels], np.int32),
    )


class Recorder:
    def __init__(self):
        self.records, self.params = [], {}

    def on_start(self, epochs, steps_per_epoch):
        self.steps_per_epoch = steps_per_epoch

    def on_step(self, epoch, step_in_epoch):
        pass

    def on_epoch(self, record, params):
        self.records.append(record)
        if params is not None:
            self.params[record.epoch] = params


MODEL = build_model(ModelConfig(2, 2, **TINY_MODEL))


def test_one_step_changes_every_parameter():
    data = _arrays(8)
    state = create_train_state(MODEL, TrainConfig(warmup_steps=0, lr=1e-2), total_steps=10)
    before = jax.device_get(state.params)
    batch = Batch(data.inputs, data.lengths, data.labels, np.ones(8, np.float32))
    state, metrics = jax.jit(train_step)(state, batch, jax.random.key(0))
    state, metrics = jax.jit(train_step)(state, batch, jax.random.key(0))
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, jax.device_get(state.params))
    assert all(jax.tree.leaves(changed)), changed
    assert float(metrics.count) == 8


def test_padding_rows_carry_no_weight():
    """A batch padded with zero-weight rows updates exactly like the real rows alone."""
    data = _arrays(8)
    step = jax.jit(train_step)
    key = jax.random.key(0)
    weights = np.array([1] * 4 + [0] * 4, np.float32)
    flipped = np.concatenate([data.labels[:4], 1 - data.labels[4:]])
    padded_batch = Batch(data.inputs, data.lengths, flipped, weights)
    real_batch = Batch(data.inputs[:4], data.lengths[:4], data.labels[:4], np.ones(4, np.float32))
    config = TrainConfig(warmup_steps=0)
    padded_state, padded_metrics = step(create_train_state(MODEL, config, 10), padded_batch, key)
    real_state, real_metrics = step(create_train_state(MODEL, config, 10), real_batch, key)
    assert float(padded_metrics.count) == 4
    np.testing.assert_allclose(padded_metrics.loss_sum, real_metrics.loss_sum, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        padded_state.params,
        real_state.params,
    )


def test_same_seed_gives_bit_identical_parameters_and_another_seed_differs():
    config = TrainConfig(epochs=2, batch_size=8, min_steps=0)
    results = [
        fit(MODEL, c, _arrays(), _arrays(8, seed=5), Recorder())
        for c in (config, config, TrainConfig(epochs=2, batch_size=8, min_steps=0, seed=1))
    ]
    same = jax.tree.map(np.array_equal, results[0].params, results[1].params)
    assert all(jax.tree.leaves(same))
    differ = jax.tree.map(np.array_equal, results[0].params, results[2].params)
    assert not all(jax.tree.leaves(differ))


def test_early_stopping_returns_the_best_epoch_weights():
    recorder = Recorder()
    config = TrainConfig(epochs=12, batch_size=8, patience=3, min_steps=0, lr=3e-2)
    result = fit(MODEL, config, _arrays(), _arrays(8, seed=5), recorder)
    scores = [(r.val_accuracy, -r.val_loss) for r in recorder.records]
    assert result.best_epoch == 1 + int(np.argmax([s[0] * 1e6 + s[1] for s in scores]))
    same = jax.tree.map(np.array_equal, result.params, recorder.params[result.best_epoch])
    assert all(jax.tree.leaves(same))
    logits_fn = make_logits_fn(MODEL)
    val = _arrays(8, seed=5)
    proba = predict_proba(logits_fn, result.params, val.inputs, val.lengths)
    assert float((proba.argmax(1) == val.labels).mean()) == pytest.approx(result.best_val_accuracy)


def test_min_steps_floor_delays_early_stopping():
    config = TrainConfig(epochs=50, batch_size=24, patience=1, min_steps=10)
    result = fit(MODEL, config, _arrays(), _arrays(8, seed=5), Recorder())
    assert result.steps >= 10


def test_predict_proba_does_not_depend_on_batch_size():
    state = create_train_state(MODEL, TrainConfig(), total_steps=1)
    data = _arrays(10)
    logits_fn = make_logits_fn(MODEL)
    outputs = [
        predict_proba(logits_fn, state.params, data.inputs, data.lengths, b) for b in (1, 3, 64)
    ]
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[0].sum(axis=1), 1.0, rtol=1e-6)
