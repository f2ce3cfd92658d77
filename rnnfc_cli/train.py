"""Optimizer, pure train/eval steps, the epoch loop with early stopping, and batched predict.

Every batch has the same shape (the last one is padded and masked by zero weights), so each
step compiles once. Metrics are sums and counts kept on the device and fetched once per
epoch, never per step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from rnnfc_cli.config import TrainConfig
from rnnfc_cli.models import SequenceClassifier

PREDICT_BATCH = 256
LOSS_MIN_DELTA = 1e-3


@struct.dataclass
class Batch:
    """One fixed-shape batch.

    Attributes:
      inputs: float32[batch, time, features].
      lengths: int32[batch]; padding rows have length 1.
      labels: int32[batch].
      weights: float32[batch]; 0 for padding rows.
    """

    inputs: jax.Array
    lengths: jax.Array
    labels: jax.Array
    weights: jax.Array


@struct.dataclass
class Metrics:
    """Sums over examples, so batches add up exactly whatever their padding."""

    loss_sum: jax.Array
    correct: jax.Array
    count: jax.Array

    def __add__(self, other: Metrics) -> Metrics:
        return jax.tree.map(jnp.add, self, other)

    @classmethod
    def zero(cls) -> Metrics:
        return cls(jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW on a linear warm-up + cosine schedule, after clipping by global norm."""
    warmup = min(config.warmup_steps, max(total_steps // 10, 1))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=config.lr * 0.01,
    )
    adamw = optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
    return adamw


def init_params(model: SequenceClassifier, key: jax.Array) -> Any:
    """Parameters for ``model``, initialised in one compiled call."""

    def init(key):
        inputs = jnp.zeros((1, 1, model.num_features), jnp.float32)
        return model.init(key, inputs, jnp.ones((1,), jnp.int32), train=False)["params"]

    return jax.jit(init)(key)


def abstract_params(model: SequenceClassifier) -> Any:
    """Shapes and dtypes of ``model``'s parameters, without computing any."""
    return jax.eval_shape(lambda: init_params(model, jax.random.key(0)))


def create_train_state(
    model: SequenceClassifier, config: TrainConfig, total_steps: int
) -> train_state.TrainState:
    params = init_params(model, jax.random.key(config.seed))
    return train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=make_optimizer(config, total_steps)
    )


def _loss_and_metrics(logits: jax.Array, batch: Batch) -> tuple[jax.Array, Metrics]:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
    correct = (jnp.argmax(logits, -1) == batch.labels) * batch.weights
    metrics = Metrics(
        loss_sum=(losses * batch.weights).sum(),
        correct=correct.sum(),
        count=batch.weights.sum(),
    )
    return metrics.loss_sum / jnp.maximum(metrics.count, 1.0), metrics


def train_step(
    state: train_state.TrainState, batch: Batch, key: jax.Array
) -> tuple[train_state.TrainState, Metrics]:
    """One optimizer step on the weighted mean cross-entropy of ``batch``."""
    dropout_key = jax.random.fold_in(key, state.step)

    def loss_fn(params):
        logits = state.apply_fn(
            {"params": params},
            batch.inputs,
            batch.lengths,
            train=True,
            rngs={"dropout": dropout_key},
        )
        return _loss_and_metrics(logits, batch)

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), metrics


def make_logits_fn(model: SequenceClassifier) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """A compiled ``(params, inputs, lengths) -> logits`` for inference."""

    @jax.jit
    def logits_fn(params, inputs, lengths):
        return model.apply({"params": params}, inputs, lengths, train=False)

    return logits_fn


def predict_proba(
    logits_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    params: Any,
    inputs: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = PREDICT_BATCH,
) -> np.ndarray:
    """Class probabilities float64[n, classes], in fixed-shape batches."""
    n = len(inputs)
    batch_size = max(1, min(batch_size, n))
    chunks = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        batch_inputs = inputs[start:stop]
        batch_lengths = lengths[start:stop]
        if pad:
            batch_inputs = np.concatenate(
                [batch_inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)]
            )
            batch_lengths = np.concatenate([batch_lengths, np.ones(pad, lengths.dtype)])
        chunks.append(logits_fn(params, batch_inputs, batch_lengths.astype(np.int32)))
    logits = np.concatenate([np.asarray(c, np.float64) for c in jax.device_get(chunks)])[:n]
    return _softmax(logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """One finished epoch, as written to ``metrics.jsonl``."""

    epoch: int
    step: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    improved: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What the epoch loop hands back: the best weights and how they were found."""

    params: Any
    best_epoch: int
    best_val_accuracy: float
    best_val_loss: float
    epochs_run: int
    steps: int
    train_seconds: float
    history: tuple[EpochRecord, ...]


class FitCallbacks(Protocol):
    """Hooks the caller uses to show progress and keep the best checkpoint."""

    def on_start(self, epochs: int, steps_per_epoch: int) -> None: ...

    def on_step(self, epoch: int, step_in_epoch: int) -> None: ...

    def on_epoch(self, record: EpochRecord, params: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class ArraySet:
    """Model-ready arrays: scaled inputs, lengths and class indices."""

    inputs: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)


def _train_batches(data: ArraySet, batch_size: int, order: np.ndarray) -> Iterator[Batch]:
    n = len(order)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        pad = batch_size - len(index)
        weights = np.ones(batch_size, np.float32)
        if pad:
            weights[len(index) :] = 0.0
            index = np.concatenate([index, np.full(pad, index[0])])
        yield Batch(
            inputs=data.inputs[index],
            lengths=data.lengths[index].astype(np.int32),
            labels=data.labels[index].astype(np.int32),
            weights=weights,
        )


def _is_better(accuracy: float, loss: float, best: tuple[float, float] | None) -> bool:
    """Validation accuracy first; lower loss breaks ties (small sets tie often)."""
    if best is None:
        return True
    return (accuracy, -loss) > (best[0], -best[1])


def _is_progress(accuracy: float, loss: float, best: tuple[float, float] | None) -> bool:
    """Whether an epoch resets the patience count: higher accuracy, or a loss lower by more
    than ``LOSS_MIN_DELTA``. Ever smaller loss gains at perfect accuracy do not keep a run
    going to its epoch limit.
    """
    if best is None:
        return True
    return accuracy > best[0] or (accuracy == best[0] and loss < best[1] - LOSS_MIN_DELTA)


def fit(
    model: SequenceClassifier,
    config: TrainConfig,
    train: ArraySet,
    val: ArraySet,
    callbacks: FitCallbacks,
) -> FitResult:
    """Train with early stopping on validation accuracy; return the best weights."""
    batch_size = max(1, min(config.batch_size, len(train)))
    steps_per_epoch = -(-len(train) // batch_size)
    state = create_train_state(model, config, config.epochs * steps_per_epoch)
    step_fn = jax.jit(train_step, donate_argnums=0)
    logits_fn = make_logits_fn(model)
    key = jax.random.key(config.seed)
    shuffle = np.random.default_rng(config.seed)
    callbacks.on_start(config.epochs, steps_per_epoch)

    best: tuple[float, float] | None = None
    best_epoch, progress_epoch, best_params, history = 0, 0, None, []
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        totals = Metrics.zero()
        order = shuffle.permutation(len(train))
        for i, batch in enumerate(_train_batches(train, batch_size, order), start=1):
            state, metrics = step_fn(state, batch, key)
            totals = totals + metrics
            callbacks.on_step(epoch, i)
        totals = jax.device_get(totals)
        val_loss, val_accuracy = _score(logits_fn, state.params, val)
        improved = _is_better(val_accuracy, val_loss, best)
        if _is_progress(val_accuracy, val_loss, best):
            progress_epoch = epoch
        record = EpochRecord(
            epoch=epoch,
            step=int(state.step),
            train_loss=float(totals.loss_sum / totals.count),
            train_accuracy=float(totals.correct / totals.count),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            seconds=time.perf_counter() - epoch_start,
            improved=improved,
        )
        history.append(record)
        if improved:
            best, best_epoch = (val_accuracy, val_loss), epoch
            best_params = jax.device_get(state.params)
        callbacks.on_epoch(record, best_params if improved else None)
        if epoch - progress_epoch >= config.patience and record.step >= config.min_steps:
            break
    assert best is not None
    return FitResult(
        params=best_params,
        best_epoch=best_epoch,
        best_val_accuracy=best[0],
        best_val_loss=best[1],
        epochs_run=len(history),
        steps=history[-1].step,
        train_seconds=time.perf_counter() - started,
        history=tuple(history),
    )


def _score(logits_fn, params, data: ArraySet) -> tuple[float, float]:
    """Mean log loss and accuracy of ``params`` on ``data``."""
    proba = predict_proba(logits_fn, params, data.inputs, data.lengths)
    picked = proba[np.arange(len(data)), data.labels]
    loss = float(-np.log(np.clip(picked, 1e-15, None)).mean())
    accuracy = float((proba.argmax(axis=1) == data.labels).mean())
    return loss, accuracy
