"""Training: one step moves every parameter, seeds reproduce, early stopping keeps the best,
class weights and the ensemble behave as defined."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from conftest import TINY_MODEL, make_sequences, padded

from rnnfc_cli.callbacks import Callback
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.inference import make_proba_fn, member_keys, member_proba, predict_proba
from rnnfc_cli.metrics import log_loss_and_accuracy
from rnnfc_cli.models import build_model
from rnnfc_cli.train import (
    ArraySet,
    Batch,
    class_weights,
    create_train_state,
    fit,
    learning_rate,
    make_ensemble_step,
    schedule_numbers,
    weighted_loss_sums,
)


def _arrays(n=24, seed=0) -> ArraySet:
    sequences, labels = make_sequences(n, seed=seed)
    return ArraySet(
        inputs=np.nan_to_num(padded(sequences)).astype(np.float32),
        lengths=np.array([len(s) for s in sequences], np.int32),
        labels=np.array([0 if label == "up" else 1 for label in labels], np.int32),
    )


def _batch(data: ArraySet, weights=None) -> Batch:
    n = len(data)
    weights = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    return Batch(data.inputs, data.lengths, data.labels, weights)


class Recorder(Callback):
    def __init__(self):
        self.records, self.params = [], {}

    def on_epoch(self, record, params):
        self.records.append(record)
        if params is not None:
            self.params[record.epoch] = params


MODEL = build_model(ModelConfig(2, 2, **TINY_MODEL))
VAL = _arrays(8, seed=5)


def _tree_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def test_one_step_changes_every_parameter_of_every_member():
    config = TrainConfig(warmup_steps=0, lr=1e-2, ensemble=2)
    state = create_train_state(MODEL, config, total_steps=10)
    before = jax.device_get(state.params)
    step = make_ensemble_step(np.ones(2, np.float32), 0.0)
    keys = member_keys(0, 2)
    for _ in range(2):
        state, metrics = step(state, _batch(_arrays(8)), keys)
    after = jax.device_get(state.params)
    moved = jax.tree.map(
        lambda a, b: np.all(np.any((a != b).reshape(2, -1), axis=1)), before, after
    )
    assert all(jax.tree.leaves(moved)), moved
    assert metrics.count.tolist() == [8, 8]


@pytest.mark.parametrize("total, warmup", [(1000, 50), (30, 50), (7, 0), (1, 50)])
def test_the_learning_rate_is_optaxs_warmup_cosine_schedule(total, warmup):
    config = TrainConfig(lr=3e-3, warmup_steps=warmup)
    schedule = schedule_numbers(config, total)
    optax_schedule = optax.warmup_cosine_decay_schedule(
        0.0, 3e-3, int(schedule[1]), int(schedule[2]), end_value=3e-5
    )
    steps = np.arange(total + 3)
    ours = jax.vmap(learning_rate, in_axes=(0, None))(steps, schedule)
    np.testing.assert_allclose(ours, optax_schedule(steps), rtol=1e-5, atol=1e-9)


def test_one_compiled_step_serves_every_length_and_rate_of_training():
    """The schedule, rate, weight decay, clipping norm and class weights are arguments,
    not constants of the compiled step: a refit or another training of the same model
    traces and compiles nothing."""
    from rnnfc_cli.train import _compiled_step

    model = build_model(ModelConfig(2, 2, hidden=7, dense=(3,)))  # compiled by no other test
    compiled = _compiled_step(0.0, None, "", 0)  # what every step without smoothing runs
    before = compiled._cache_size()
    batch, keys = _batch(_arrays(8)), member_keys(0, 1)
    for config, total in [(TrainConfig(), 10), (TrainConfig(lr=0.1, weight_decay=0.01), 5000)]:
        step = make_ensemble_step(np.ones(2, np.float32) * total, 0.0)
        state = create_train_state(model, config, total)
        for _ in range(2):
            state, metrics = step(state, batch, keys)
        assert np.isfinite(metrics.loss_sum).all()
    assert compiled._cache_size() == before + 1


def test_padding_rows_carry_no_weight():
    """A batch padded with zero-weight rows updates exactly like the real rows alone."""
    data = _arrays(8)
    step = make_ensemble_step(np.ones(2, np.float32), 0.0)
    keys = member_keys(0, 1)
    flipped = ArraySet(data.inputs, data.lengths, np.r_[data.labels[:4], 1 - data.labels[4:]])
    half = ArraySet(data.inputs[:4], data.lengths[:4], data.labels[:4])
    config = TrainConfig(warmup_steps=0)
    padded_state, padded_metrics = step(
        create_train_state(MODEL, config, 10), _batch(flipped, [1] * 4 + [0] * 4), keys
    )
    real_state, real_metrics = step(create_train_state(MODEL, config, 10), _batch(half), keys)
    assert padded_metrics.count.tolist() == [4]
    np.testing.assert_allclose(padded_metrics.loss_sum, real_metrics.loss_sum, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        padded_state.params,
        real_state.params,
    )


def test_class_weights_and_label_smoothing_change_the_loss_as_defined():
    labels = np.array([0, 0, 0, 1])
    weights = class_weights(labels, 2, "balanced")
    np.testing.assert_allclose(weights, [4 / (2 * 3), 4 / (2 * 1)])
    np.testing.assert_array_equal(class_weights(labels, 2, "none"), [1, 1])
    logits = np.array([[2.0, -1.0], [0.5, 0.1], [-1.0, 1.0], [0.2, 0.3], [5.0, 5.0]])
    batch = Batch(None, None, np.array([0, 0, 0, 1, 1]), np.array([1, 1, 1, 1, 0.0]))
    metrics = weighted_loss_sums(logits, batch, weights, 0.1)
    loss = metrics.loss_sum / metrics.count
    targets = np.eye(2)[batch.labels] * 0.9 + 0.05
    ce = -(targets * jax.nn.log_softmax(logits)).sum(axis=1)
    expected = (ce * batch.weights * weights[batch.labels]).sum() / 4
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    plain_sums = weighted_loss_sums(logits, batch, np.ones(2), 0.0)
    plain = plain_sums.loss_sum / plain_sums.count
    ce_plain = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
    np.testing.assert_allclose(plain, (ce_plain * batch.weights).sum() / 4, rtol=1e-6)
    assert float(metrics.count) == 4


def test_same_seed_gives_bit_identical_parameters_and_another_seed_differs():
    config = TrainConfig(epochs=2, batch_size=8, min_steps=0)
    other = TrainConfig(epochs=2, batch_size=8, min_steps=0, seed=1)
    results = [fit(MODEL, c, _arrays(), VAL, Recorder()) for c in (config, config, other)]
    assert _tree_equal(results[0].params, results[1].params)
    assert not _tree_equal(results[0].params, results[2].params)


def test_early_stopping_returns_the_best_epoch_weights():
    recorder = Recorder()
    config = TrainConfig(epochs=12, batch_size=8, patience=3, min_steps=0, lr=3e-2)
    result = fit(MODEL, config, _arrays(), VAL, recorder)
    scores = [r.val_accuracy * 1e6 - r.val_loss for r in recorder.records]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    assert _tree_equal(result.params, recorder.params[result.best_epoch])
    proba = predict_proba(make_proba_fn(MODEL), result.params, VAL.inputs, VAL.lengths)
    assert float((proba.argmax(1) == VAL.labels).mean()) == pytest.approx(result.best_val_accuracy)


def test_monitor_val_loss_keeps_the_lowest_loss_epoch():
    recorder = Recorder()
    config = TrainConfig(epochs=8, batch_size=8, min_steps=0, lr=3e-2, monitor="val_loss")
    result = fit(MODEL, config, _arrays(), VAL, recorder)
    losses = [r.val_loss for r in recorder.records]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    assert result.best_val_loss == pytest.approx(min(losses), rel=1e-6)


def test_min_steps_floor_delays_early_stopping():
    config = TrainConfig(epochs=50, batch_size=24, patience=1, min_steps=10)
    assert fit(MODEL, config, _arrays(), VAL, Recorder()).steps >= 10


@pytest.mark.parametrize("sequences", [2, 32, 180, 8192])
@pytest.mark.parametrize("min_steps", [0, 1000, 5000])
def test_automatic_epochs_give_small_sets_their_steps(sequences, min_steps):
    from rnnfc_cli.config import EPOCHS

    chosen = TrainConfig(batch_size=32, min_steps=min_steps).resolved(sequences)
    batches = -(-sequences // 32)
    # At least EPOCHS, and just enough epochs to reach min_steps when EPOCHS fall short.
    assert chosen.epochs >= EPOCHS
    assert chosen.epochs * batches >= min_steps
    assert chosen.epochs == EPOCHS or (chosen.epochs - 1) * batches < min_steps
    # What was given stays as given.
    given = TrainConfig(epochs=7, batch_size=5, min_steps=min_steps)
    assert given.resolved(sequences) == given


@pytest.mark.xla_default
def test_ensemble_members_are_single_runs_and_predict_their_average():
    """Member i of --seeds K behaves as a lone run with seed + i; predict averages them.

    Vmapped and lone steps round differently, and Adam magnifies that on near-zero
    gradients, so members are compared by their predictions, not bit for bit.
    """
    base = dict(epochs=3, batch_size=8, min_steps=0, patience=100)
    ensemble = fit(MODEL, TrainConfig(**base, ensemble=2), _arrays(), VAL, Recorder())
    singles = [fit(MODEL, TrainConfig(**base, seed=s), _arrays(), VAL, Recorder()) for s in (0, 1)]
    proba_fn = make_proba_fn(MODEL)
    members = member_proba(proba_fn, ensemble.params, VAL.inputs, VAL.lengths)
    for member, single in enumerate(singles):
        alone = member_proba(proba_fn, single.params, VAL.inputs, VAL.lengths)[0]
        np.testing.assert_allclose(members[member], alone, atol=2e-3)
        assert ensemble.best_epochs[member] == single.best_epochs[0]
    assert not np.allclose(members[0], members[1], atol=1e-3)
    assert members.shape == (2, len(VAL), 2)
    averaged = predict_proba(proba_fn, ensemble.params, VAL.inputs, VAL.lengths)
    np.testing.assert_allclose(averaged, members.mean(axis=0))
    loss, accuracy = log_loss_and_accuracy(averaged, VAL.labels)
    assert ensemble.best_val_accuracy == pytest.approx(accuracy)
    assert ensemble.best_val_loss == pytest.approx(loss)


def test_predict_proba_does_not_depend_on_batch_size():
    state = create_train_state(MODEL, TrainConfig(), total_steps=1)
    data = _arrays(10)
    proba_fn = make_proba_fn(MODEL)
    outputs = [
        predict_proba(proba_fn, state.params, data.inputs, data.lengths, b) for b in (1, 3, 64)
    ]
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[0].sum(axis=1), 1.0, rtol=1e-6)


def test_divergence_stops_training_and_keeps_the_best_epoch_before_it():
    """With one step per epoch, step 1 runs at lr 0, step 2 at lr 1e30, and step 3 sees
    the exploded weights: the loss there is not finite."""
    config = TrainConfig(
        epochs=6, batch_size=8, min_steps=0, patience=100, lr=1e30, warmup_steps=1, clip_norm=0
    )
    recorder = Recorder()
    result = fit(MODEL, config, _arrays(8), VAL, recorder)
    assert result.diverged_at == (3, 3)
    assert result.epochs_run == 2 and result.best_epoch <= 2
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.params))
    assert _tree_equal(result.params, recorder.params[result.best_epoch])


def test_divergence_before_any_epoch_is_an_error():
    from rnnfc_cli.errors import TrainingDivergedError

    data = _arrays(8)
    data.inputs[0, 0, 0] = np.nan
    with pytest.raises(TrainingDivergedError, match="epoch 1, step 1"):
        fit(MODEL, TrainConfig(epochs=2, batch_size=8, min_steps=0), data, VAL, Recorder())


def test_length_buckets_cut_padding_and_each_example_appears_once_per_epoch():
    from rnnfc_cli.train import _train_batches, length_buckets

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(5, 20, 1500), rng.integers(150, 200, 100)])
    assert length_buckets(lengths, 32, min_sequences=10**9) == (lengths.max(),)
    buckets = length_buckets(lengths, 32)
    assert len(buckets) > 1 and buckets[-1] == lengths.max()
    assert all(edge % 8 == 0 or edge == lengths.max() for edge in buckets)
    data = ArraySet(
        inputs=np.zeros((len(lengths), lengths.max(), 1), np.float32),
        lengths=lengths.astype(np.int32),
        labels=np.zeros(len(lengths), np.int32),
    )
    order = rng.permutation(len(lengths))
    seen, padded_steps = [], 0
    for batch in _train_batches(data, 32, order, buckets, np.random.default_rng(1)):
        real = batch.weights > 0
        assert batch.inputs.shape[1] in buckets
        assert (batch.lengths <= batch.inputs.shape[1]).all()
        seen += batch.lengths[real].tolist()
        padded_steps += batch.inputs.shape[0] * batch.inputs.shape[1]
    assert sorted(seen) == sorted(lengths.tolist())
    assert padded_steps < 0.5 * len(lengths) * lengths.max()


def test_the_warm_up_leaves_what_creates_the_train_state_compiled():
    """``start_warm_up`` (run while the data are scaled) compiles the very programs that
    ``create_train_state`` then calls: nothing is traced again, for an ensemble too, and
    the state holds the parameters its seeds give."""
    from rnnfc_cli import inference, train

    model = build_model(ModelConfig(3, 2, conv="4:3", **TINY_MODEL))
    config = TrainConfig(ensemble=2, seed=5)
    train.start_warm_up(model, config)()
    initializer = inference._initializer(model)
    creator = train._state_creator(model, config.clip_norm > 0)
    compiled = (initializer._cache_size(), creator._cache_size())
    assert compiled == (1, 1)
    state = train.create_train_state(model, config, 100)
    assert (initializer._cache_size(), creator._cache_size()) == compiled
    for a, b in zip(
        jax.tree.leaves(state.params),
        jax.tree.leaves(inference.init_params(model, member_keys(5, 2))),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
