"""Optimizer, pure train step, the epoch loop with early stopping, and batched predict.

Training always runs an ensemble of ``TrainConfig.ensemble`` members (one by default):
parameters, optimizer state and PRNG keys carry a leading member axis and the train step
is ``jax.vmap``-ed over it, so K models train in one compiled program on the same batches.

Every batch has the same shape (the last one is padded and masked by zero weights), so each
step compiles once. Each step's metrics (sums and counts) stay on the device and are
fetched and added up on the host once per epoch, never per step.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct, traverse_util
from flax.training import train_state
from jax.sharding import NamedSharding

from rnnfc_cli.augment import Mix, augmented
from rnnfc_cli.callbacks import Callback
from rnnfc_cli.config import CHECKPOINT_EVERY, TrainConfig
from rnnfc_cli.errors import TrainingDivergedError, TrainingInterruptedError
from rnnfc_cli.inference import (
    COMPILED_PER_PROCESS,
    init_params,
    make_proba_fn,
    member_keys,
    member_proba,
    predict_proba,
)
from rnnfc_cli.metrics import log_loss_and_accuracy
from rnnfc_cli.models import STATISTICS, SequenceClassifier
from rnnfc_cli.parallel import (
    InFlight,
    batch_sharding,
    data_devices,
    device_batch_size,
    place,
    to_host,
)
from rnnfc_cli.prefetch import prefetch

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
        """The sums of both, on the host (``_Loop.settle`` adds them there)."""
        return jax.tree.map(np.add, self, other)


# The layout of ``TrainState`` (and so of its snapshots), part of a run's key: a run
# interrupted under another layout is refused on --resume with a clear message instead of
# failing to restore. 2: the schedule in the state, the optimizer's settings as its
# hyperparameters.
STATE_LAYOUT = 2


class TrainState(train_state.TrainState):
    """Flax's train state plus the learning-rate schedule as numbers (see
    ``learning_rate``)."""

    schedule: jax.Array  # float32[4]: peak rate, warm-up steps, total steps, final rate


@functools.cache
def make_optimizer(clipped: bool) -> optax.GradientTransformation:
    """AdamW, after clipping by global norm when ``clipped``, with its rate, weight decay
    and clipping norm as state (``optax.inject_hyperparams``; ``create_train_state`` sets
    them, ``train_step`` sets the rate of each step from ``TrainState.schedule``).

    No setting and no training length is a constant of the compiled step, and there is
    one optimizer object per structure, so the refit, a resumed run and another training
    of the same model on other data reuse the step compiled first."""
    if clipped:

        def clipped_adamw(learning_rate, weight_decay, clip_norm):
            return optax.chain(
                optax.clip_by_global_norm(clip_norm),
                optax.adamw(learning_rate, weight_decay=weight_decay),
            )

        return optax.inject_hyperparams(clipped_adamw)(0.0, 0.0, 0.0)
    return optax.inject_hyperparams(optax.adamw)(0.0, weight_decay=0.0)


def _hyperparameters(config: TrainConfig) -> dict[str, np.ndarray]:
    """The values of ``make_optimizer``'s state; the rate is set at each step."""
    values = {"learning_rate": 0.0, "weight_decay": config.weight_decay}
    if config.clip_norm > 0:
        values["clip_norm"] = config.clip_norm
    return {name: np.float32(value) for name, value in values.items()}


def schedule_numbers(config: TrainConfig, total_steps: int) -> np.ndarray:
    """``TrainState.schedule`` for ``total_steps`` optimizer steps: a linear warm-up of
    at most a tenth of them, then a cosine decay to 1 % of the peak rate."""
    warmup = min(config.warmup_steps, max(total_steps // 10, 1))
    total = max(total_steps, warmup + 1)
    return np.array([config.lr, warmup, total, config.lr * 0.01], np.float32)


def learning_rate(step: jax.Array, schedule: jax.Array) -> jax.Array:
    """The rate of optimizer step ``step`` (0 for the first): optax's
    ``warmup_cosine_decay_schedule`` with its lengths read from ``schedule`` at run time,
    where optax's own schedules would make them constants of the compiled step (a refit of
    the default model on the bundled motion data compiled 13 s more for that)."""
    peak, warmup, total, final = schedule[0], schedule[1], schedule[2], schedule[3]
    step = step.astype(jnp.float32)
    warming = peak * step / jnp.maximum(warmup, 1.0)
    progress = jnp.clip((step - warmup) / (total - warmup), 0.0, 1.0)
    decaying = final + (peak - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup, warming, decaying)


def _with_rate(opt_state: Any, rate: jax.Array) -> Any:
    """``opt_state`` (of ``make_optimizer``) with its learning rate set to ``rate``."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": rate})


def create_train_state(
    model: SequenceClassifier, config: TrainConfig, total_steps: int
) -> TrainState:
    """Stacked train state of ``config.ensemble`` members (leading axis on every leaf)."""
    params = init_params(model, member_keys(config.seed, config.ensemble))
    numbers = (schedule_numbers(config, total_steps), _hyperparameters(config))
    return _state_creator(model, config.clip_norm > 0)(params, *numbers)


@functools.lru_cache(maxsize=COMPILED_PER_PROCESS)
def _state_creator(model: SequenceClassifier, clipped: bool) -> Callable[..., TrainState]:
    """The compiled ``(stacked params, schedule, hyperparameters) -> TrainState``, one per
    model and optimizer structure (see ``inference._initializer``)."""
    tx = make_optimizer(clipped)

    def create(member_params, schedule, hyperparams):
        state = TrainState.create(
            apply_fn=model.apply, params=member_params, tx=tx, schedule=schedule
        )
        return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))

    return jax.jit(jax.vmap(create, in_axes=(0, None, None)))


def start_warm_up(model: SequenceClassifier, config: TrainConfig) -> Callable[[], None]:
    """Trace and compile (or load from the persistent cache) the programs that create the
    train state of ``model`` under ``config``, in a background thread; returns the
    function that waits for them.

    Started while the data are still being scaled, their ~0.9 s (tracing the model's
    initialisation, loading two compiled programs) overlaps that work, and ``fit`` finds
    them ready. A failure is left for ``fit``, which meets it again and reports it.
    """

    def warm() -> None:
        try:
            create_train_state(model, config, 1)
        except Exception:  # fit runs the same call and reports the error
            return

    thread = threading.Thread(target=warm, name="rnnfc-warm-up", daemon=True)
    thread.start()
    return thread.join


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: ones, or "balanced" ``n / (classes * n_class)``."""
    if mode == "none":
        return np.ones(num_classes, np.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return weights.astype(np.float32)


def weighted_loss_sums(
    logits: jax.Array,
    batch: Batch,
    weights_by_class: jax.Array,
    label_smoothing: float,
    mix: Mix | None = None,
) -> Metrics:
    """Sums whose ratio ``loss_sum / count`` is the training loss
    sum_i m_i w_{y_i} CE_i / sum_i m_i, with m the padding mask and w the class weights;
    CE is against labels smoothed by ``label_smoothing``. After mixup (``mix``) targets
    and class weights are mixed as the inputs were; accuracy counts the own label."""
    targets = jax.nn.one_hot(batch.labels, logits.shape[-1])
    class_weights_of_rows = weights_by_class[batch.labels]
    if mix is not None:
        share = mix.share[:, None]
        targets = share * targets + (1.0 - share) * targets[mix.partner]
        class_weights_of_rows = (
            mix.share * class_weights_of_rows
            + (1.0 - mix.share) * (class_weights_of_rows[mix.partner])
        )
    if label_smoothing > 0:
        targets = optax.smooth_labels(targets, label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    example_weights = batch.weights * class_weights_of_rows
    return Metrics(
        loss_sum=(losses * example_weights).sum(),
        correct=((jnp.argmax(logits, -1) == batch.labels) * batch.weights).sum(),
        count=batch.weights.sum(),
    )


def train_step(
    state: TrainState,
    batch: Batch,
    key: jax.Array,
    weights_by_class: jax.Array,
    label_smoothing: float = 0.0,
    axis_name: str | None = None,
    augment: str = "",
    fixed: int = 0,
) -> tuple[TrainState, Metrics]:
    """One optimizer step of one ensemble member on ``batch``, augmented by ``augment``
    (``TrainConfig.augment``; ``fixed``: see ``augment.augmented``): loss_sum / count of
    ``weighted_loss_sums``.

    The gradient is taken of the loss sum and divided by the example count afterwards,
    so that with ``axis_name`` (inside ``shard_map``, ``batch`` being this device's
    share) one sum over the devices, of gradients and metrics together, gives the whole
    batch's: every collective is a rendezvous of the devices' threads. Each device
    draws its own dropout masks.
    """
    dropout_key = jax.random.fold_in(key, state.step)
    if axis_name is not None:
        dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))

    inputs, lengths, mix = augmented(
        augment,
        batch.inputs,
        batch.lengths,
        batch.weights,
        jax.random.fold_in(dropout_key, 1),
        fixed,
    )

    def loss_sum_fn(params):
        logits, sown = state.apply_fn(
            {"params": params},
            inputs,
            lengths,
            train=True,
            row_weights=batch.weights,
            axis_name=axis_name,
            rngs={"dropout": dropout_key},
            mutable=[STATISTICS],
        )
        metrics = weighted_loss_sums(logits, batch, weights_by_class, label_smoothing, mix)
        return metrics.loss_sum, (metrics, sown.get(STATISTICS, {}))

    grads, (metrics, statistics) = jax.grad(loss_sum_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads, metrics = jax.lax.psum((grads, metrics), axis_name)
    scale = 1.0 / jnp.maximum(metrics.count, 1.0)
    grads = jax.tree.map(lambda g: g * scale, grads)
    rate = learning_rate(state.step, state.schedule)
    state = state.replace(opt_state=_with_rate(state.opt_state, rate))
    state = state.apply_gradients(grads=grads)
    return state.replace(params=with_running_statistics(state.params, statistics)), metrics


def with_running_statistics(params: Any, statistics: Any) -> Any:
    """``params`` with the running statistics sown by ``models.MaskedBatchNorm`` put in
    place (same paths), replacing whatever the optimizer did to those leaves."""
    updates = traverse_util.flatten_dict(statistics)
    if not updates:
        return params
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({**flat, **updates})


def make_ensemble_step(
    weights_by_class: np.ndarray,
    label_smoothing: float,
    shardings: tuple[NamedSharding, NamedSharding] | None = None,
    augment: str = "",
    fixed: int = 0,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
    """The compiled step for stacked states: every member, the same batch, its own key.

    With ``shardings`` (from ``batch_sharding``), the batch arrives split over the
    devices and each device runs the step on its share under ``shard_map``, with one
    gradient sum at the end. Left to XLA's automatic partitioning, the weight gradients
    were summed across devices at every time step of the backward scan, which made two
    CPU devices no faster than one; this way they run side by side.
    """
    compiled = _compiled_step(label_smoothing, shardings, augment, fixed)
    weights = jnp.asarray(weights_by_class, jnp.float32)
    if shardings is not None:
        weights = place(weights, shardings[1])  # on every device once, not at each step

    def step(state, batch, keys):
        return compiled(state, batch, keys, weights)

    return step if shardings is None else _bounded(step)


@functools.lru_cache(maxsize=COMPILED_PER_PROCESS)
def _compiled_step(
    label_smoothing: float,
    shardings: tuple[NamedSharding, NamedSharding] | None,
    augment: str,
    fixed: int,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """``make_ensemble_step``'s jitted ``(states, batch, keys, class weights)``: one per
    process for each smoothing, device layout and augmentation, the model being part of
    the state, so that a second training in one process (the refit, a resumed run)
    reuses its trace and compiled program (jit keys them by the state's model and
    shapes)."""

    def step(state, batch, key, weights_by_class):
        return train_step(
            state,
            batch,
            key,
            weights_by_class=weights_by_class,
            label_smoothing=label_smoothing,
            axis_name=None if shardings is None else shardings[0].spec[0],
            augment=augment,
            fixed=fixed,
        )

    members = jax.vmap(step, in_axes=(0, None, 0, None))
    if shardings is None:
        return jax.jit(members, donate_argnums=0)
    split, replicated = shardings
    sharded = jax.shard_map(
        members,
        mesh=split.mesh,
        in_specs=(replicated.spec, split.spec, replicated.spec, replicated.spec),
        out_specs=replicated.spec,
        # Flax's scanned carries start device-invariant and become per-device.
        check_vma=False,
    )
    return jax.jit(sharded, donate_argnums=0)


def _bounded(step_fn: Callable) -> Callable:
    """``step_fn`` that keeps at most ``parallel.IN_FLIGHT`` steps in flight (see there)."""
    in_flight = InFlight()

    def step(state, batch, keys):
        state, metrics = step_fn(state, batch, keys)
        in_flight.add(metrics.count)
        return state, metrics

    return step


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """One finished epoch, as written to ``metrics.jsonl``.

    Validation numbers are means over ensemble members of this epoch's weights.
    """

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
    """What the epoch loop hands back: the best weights and how they were found.

    Attributes:
      params: stacked best parameters of every member (host arrays).
      best_epochs: the epoch each member's weights come from.
      member_val_accuracy: each member's validation accuracy at its best epoch.
      best_val_accuracy: validation accuracy of the ensemble of best members.
      best_val_loss: validation log loss of that ensemble.
      diverged_at: (epoch, step) where the training loss first became NaN or infinite,
        when that stopped training; the weights are then the best ones before it.
      resumed_from_epoch: the last epoch finished before this run continued from a
        snapshot (0 when the first epoch was in progress), None for a fresh run.
      val_proba: the ensemble's class probabilities on the validation set.
    """

    params: Any
    best_epochs: tuple[int, ...]
    member_val_accuracy: tuple[float, ...]
    best_val_accuracy: float
    best_val_loss: float
    epochs_run: int
    steps: int
    train_seconds: float
    history: tuple[EpochRecord, ...]
    diverged_at: tuple[int, int] | None = None
    devices: int = 1
    resumed_from_epoch: int | None = None
    val_proba: np.ndarray | None = None

    @property
    def best_epoch(self) -> int:
        return max(self.best_epochs)


@dataclasses.dataclass(frozen=True)
class TrainSnapshot:
    """Everything ``fit`` needs to continue a run exactly where it was (host values).

    Attributes:
      state: the stacked train state (parameters, optimizer state, step).
      best_params: the best parameters so far, None before an epoch improved.
      epoch: the epoch in progress; ``batches_done`` of its batches are applied.
      batches_done: 0 at an epoch boundary.
      shuffle_state: the shuffling generator's state at the start of ``epoch``, from
        which its order of batches is drawn again.
      totals: the training metrics of ``epoch``'s applied batches, None when none.
      bad_step: the first step of ``epoch`` whose loss was not finite, if any.
      monitor: the early-stopping bookkeeping (``_Monitor.to_dict``).
      history: the finished epochs.
      train_seconds: training time spent before this snapshot.
    """

    state: TrainState
    best_params: Any | None
    epoch: int
    batches_done: int
    shuffle_state: dict[str, Any]
    totals: Metrics | None
    bad_step: int | None
    monitor: dict[str, list]
    history: tuple[EpochRecord, ...]
    train_seconds: float

    @property
    def step(self) -> int:
        return int(np.asarray(self.state.step).reshape(-1)[0])

    def arrays(self) -> dict[str, Any]:
        """The array part, as nested dicts (what the checkpoint stores)."""
        from flax import serialization

        return serialization.to_state_dict(
            {"state": self.state, "best_params": self.best_params, "totals": self.totals}
        )

    def progress(self) -> dict[str, Any]:
        """The JSON part: where the loop is and what it has seen."""
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "shuffle_state": self.shuffle_state,
            "bad_step": self.bad_step,
            "has_best": self.best_params is not None,
            "has_totals": self.totals is not None,
            "monitor": self.monitor,
            "history": [record.to_dict() for record in self.history],
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def restore(
        cls, template: TrainState, arrays: dict[str, Any], progress: dict[str, Any]
    ) -> TrainSnapshot:
        """Inverse of ``arrays``/``progress``; ``template`` gives the state's structure."""
        from flax import serialization

        state = serialization.from_state_dict(template, arrays["state"])
        members = np.asarray(template.step).shape[0]
        zeros = Metrics(*(np.zeros(members, np.float32) for _ in range(3)))
        totals = (
            serialization.from_state_dict(zeros, arrays["totals"])
            if progress["has_totals"]
            else None
        )
        best = arrays["best_params"] if progress["has_best"] else None
        return cls(
            state=state,
            best_params=None
            if best is None
            else serialization.from_state_dict(template.params, best),
            epoch=progress["epoch"],
            batches_done=progress["batches_done"],
            shuffle_state=progress["shuffle_state"],
            totals=totals,
            bad_step=progress["bad_step"],
            monitor=progress["monitor"],
            history=tuple(EpochRecord(**record) for record in progress["history"]),
            train_seconds=progress["train_seconds"],
        )


@dataclasses.dataclass(frozen=True)
class ArraySet:
    """Model-ready arrays: scaled inputs, lengths and class indices; ``scale_inputs``:
    how many of the features are a sequence's scale inputs (``--normalize
    sequence+scale``; they come after the other numbers, before any token ids)."""

    inputs: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    scale_inputs: int = 0

    def __len__(self) -> int:
        return len(self.lengths)


BUCKET_MIN_SEQUENCES = 1024
BUCKET_MIN_SAVING = 0.3
_BUCKET_QUANTILES = (0.25, 0.5, 0.75)
_BUCKET_ROUND = 8


def length_buckets(
    lengths: np.ndarray,
    batch_size: int,
    min_sequences: int = BUCKET_MIN_SEQUENCES,
    min_saving: float = BUCKET_MIN_SAVING,
) -> tuple[int, ...]:
    """Padded lengths to batch sequences by, shortest first; the last is the longest length.

    Variable-length data padded to its longest sequence wastes recurrent steps; up to four
    buckets (at length quartiles, rounded up to a multiple of 8) cut that waste, at the
    cost of one compiled step per bucket. So buckets are only used when there are at
    least ``min_sequences`` sequences and they save at least ``min_saving`` of the padded
    steps of an epoch.
    """
    longest = int(lengths.max())
    if len(lengths) < min_sequences:
        return (longest,)
    quartiles = np.quantile(lengths, _BUCKET_QUANTILES)
    rounded = {
        min(longest, -(-int(np.ceil(q)) // _BUCKET_ROUND) * _BUCKET_ROUND) for q in quartiles
    }
    edges = tuple(sorted(rounded | {longest}))
    saving = 1.0 - padded_steps(lengths, edges, batch_size) / padded_steps(
        lengths, (longest,), batch_size
    )
    return edges if saving >= min_saving else (longest,)


def bucket_batches(lengths: np.ndarray, buckets: tuple[int, ...], batch_size: int) -> np.ndarray:
    """Batches per epoch in each bucket, int[buckets] (a sequence goes to the first bucket
    at least as long as it is)."""
    counts = np.bincount(np.searchsorted(buckets, lengths), minlength=len(buckets))
    return -(-counts // batch_size)


def padded_steps(lengths: np.ndarray, buckets: tuple[int, ...], batch_size: int) -> int:
    """Time steps an epoch computes, padding included, when batching by ``buckets``."""
    return int(
        (bucket_batches(lengths, buckets, batch_size) * batch_size * np.array(buckets)).sum()
    )


def _train_batches(
    data: ArraySet,
    batch_size: int,
    order: np.ndarray,
    buckets: tuple[int, ...],
    rng: np.random.Generator,
    shardings: tuple[Any, Any] | None = None,
    skip: int = 0,
) -> Iterator[Batch]:
    """Fixed-shape batches in ``order``, each padded only to its bucket's length; the
    first ``skip`` are planned (the generator is consumed alike) but never read.

    Sequences keep their shuffled order within a bucket; with several buckets the order
    of the batches is shuffled too, so an epoch does not run from short to long. With
    ``shardings`` (several devices) each batch is placed split over them; in a
    multi-process run each process reads only the rows its own devices hold.
    """
    bucket_of = np.searchsorted(buckets, data.lengths[order])
    plan = []
    for bucket, steps in enumerate(buckets):
        members = order[bucket_of == bucket]
        plan += [(members[s : s + batch_size], steps) for s in range(0, len(members), batch_size)]
    if len(buckets) > 1:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    for index, steps in plan[skip:]:
        pad = batch_size - len(index)
        weights = np.ones(batch_size, np.float32)
        if pad:
            weights[len(index) :] = 0.0
            index = np.concatenate([index, np.full(pad, index[0])])
        if shardings is not None and jax.process_count() > 1:
            yield _process_local_batch(data, index, steps, weights, shardings[0])
            continue
        batch = Batch(
            inputs=data.inputs[index, :steps],
            lengths=data.lengths[index].astype(np.int32),
            labels=data.labels[index].astype(np.int32),
            weights=weights,
        )
        yield batch if shardings is None else jax.device_put(batch, shardings[0])


def _process_local_batch(
    data: ArraySet, index: np.ndarray, steps: int, weights: np.ndarray, sharding: Any
) -> Batch:
    """A batch split over the devices of every process, of which this process reads and
    places only the rows of its own devices."""

    def part(read, shape):
        # ``at`` is the index of one device's block; its first entry slices the batch.
        return jax.make_array_from_callback(shape, sharding, lambda at: read(at[0]))

    n, features = len(index), data.inputs.shape[2]
    return Batch(
        inputs=part(lambda at: data.inputs[index[at], :steps], (n, steps, features)),
        lengths=part(lambda at: data.lengths[index[at]].astype(np.int32), (n,)),
        labels=part(lambda at: data.labels[index[at]].astype(np.int32), (n,)),
        weights=part(lambda at: weights[at], (n,)),
    )


class _Monitor:
    """Per-member early-stopping bookkeeping for one validation metric."""

    def __init__(self, metric: str, members: int):
        self.metric = metric
        self.best_loss = np.full(members, np.inf)
        self.best_accuracy = np.full(members, -np.inf)
        self.best_epoch = np.zeros(members, dtype=int)
        self.progress_epoch = np.zeros(members, dtype=int)

    def update(self, epoch: int, loss: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
        """Record an epoch; returns which members improved on their best (never a member
        whose validation loss is not finite)."""
        if self.metric == "val_loss":
            improved = loss < self.best_loss
            progress = loss < self.best_loss - LOSS_MIN_DELTA
        else:
            # Accuracy first; lower loss breaks ties (small validation sets tie often).
            # Only a loss gain above LOSS_MIN_DELTA resets patience, so ever smaller gains
            # at perfect accuracy do not keep a run going to its epoch limit.
            more = accuracy > self.best_accuracy
            same = accuracy == self.best_accuracy
            improved = more | (same & (loss < self.best_loss))
            progress = more | (same & (loss < self.best_loss - LOSS_MIN_DELTA))
        finite = np.isfinite(loss)
        improved, progress = improved & finite, progress & finite
        self.progress_epoch[progress] = epoch
        self.best_epoch[improved] = epoch
        self.best_loss[improved] = loss[improved]
        self.best_accuracy[improved] = accuracy[improved]
        return improved

    def stops(self, record: EpochRecord, config: TrainConfig) -> bool:
        """Early stopping after ``record``'s epoch: every member has gone ``patience``
        epochs without progress, and the run has taken its ``min_steps``."""
        waited = np.all(record.epoch - self.progress_epoch >= config.patience)
        return bool(waited) and record.step >= config.min_steps

    _FIELDS = ("best_loss", "best_accuracy", "best_epoch", "progress_epoch")

    def to_dict(self) -> dict[str, list]:
        # Infinities are written as None: JSON has no infinity.
        return {
            name: [None if np.isinf(v) else v.item() for v in getattr(self, name)]
            for name in self._FIELDS
        }

    def load(self, saved: dict[str, list]) -> None:
        for name in self._FIELDS:
            current = getattr(self, name)
            fill = current[0] if np.isinf(current[0]) else 0
            current[:] = [fill if v is None else v for v in saved[name]]


def _keep_improved(best: Any, current: Any, improved: np.ndarray) -> Any:
    """Member-wise select: ``current`` where ``improved``, else ``best``."""
    if best is None:
        return current

    def select(b, c):
        mask = improved.reshape((-1,) + (1,) * (c.ndim - 1))
        return np.where(mask, c, b)

    return jax.tree.map(select, best, current)


@dataclasses.dataclass
class _Loop:
    """Where ``fit`` is: what it carries from step to step, which is what a snapshot saves
    (``TrainSnapshot`` holds the same, on the host) and what a resumed run starts from.

    Attributes:
      state: the stacked train state.
      best_params: the best parameters so far (host), None before an epoch improved.
      history: the finished epochs.
      epoch: the epoch in progress (or next); ``batches_done`` of its batches applied.
      batches_done: 0 at an epoch boundary.
      shuffle_state: the shuffling generator's state when ``epoch`` began.
      totals: the training metrics (host) of ``epoch``'s settled batches, None when none.
      unsettled: the metrics (device) of the batches applied since the last ``settle``.
      bad_step: the first step of ``epoch`` known to have had a non-finite loss.
      seconds_before: training time of the run before this process took it up.
    """

    state: TrainState
    best_params: Any | None
    history: list[EpochRecord]
    epoch: int
    batches_done: int
    shuffle_state: dict[str, Any]
    totals: Metrics | None = None
    unsettled: list[Metrics] = dataclasses.field(default_factory=list)
    bad_step: int | None = None
    seconds_before: float = 0.0

    @classmethod
    def resumed(cls, snapshot: TrainSnapshot) -> _Loop:
        return cls(
            state=snapshot.state,
            best_params=snapshot.best_params,
            history=list(snapshot.history),
            epoch=snapshot.epoch,
            batches_done=snapshot.batches_done,
            shuffle_state=snapshot.shuffle_state,
            totals=snapshot.totals,
            bad_step=snapshot.bad_step,
            seconds_before=snapshot.train_seconds,
        )

    def applied(self, metrics: Metrics) -> None:
        """Count one more applied batch, whose ``metrics`` may still be computing."""
        self.unsettled.append(metrics)
        self.batches_done += 1

    def settle(self) -> None:
        """Bring the unsettled metrics to the host: add them to ``totals`` in order and
        note the first non-finite loss among them.

        Adding them on the device step by step kept the host waiting for each step to
        finish before it could dispatch the next (XLA:CPU runs such small sums inline),
        and the devices idle meanwhile: about a fifth of an LSTM epoch's time.
        """
        if not self.unsettled:
            return
        done = to_host(self.unsettled)
        self.unsettled = []
        self.bad_step = _first_bad_step(
            self.bad_step, [m.loss_sum for m in done], self.batches_done
        )
        for metrics in done:
            self.totals = metrics if self.totals is None else self.totals + metrics

    def next_epoch(self, shuffle_state: dict[str, Any]) -> None:
        self.epoch += 1
        self.batches_done, self.shuffle_state = 0, shuffle_state
        self.totals, self.unsettled, self.bad_step = None, [], None

    def snapshot(self, monitor: _Monitor, seconds: float) -> TrainSnapshot:
        """This loop on the host, ``seconds`` of training after this process began."""
        self.settle()
        return TrainSnapshot(
            state=to_host(self.state),
            best_params=self.best_params,
            epoch=self.epoch,
            batches_done=self.batches_done,
            shuffle_state=self.shuffle_state,
            totals=self.totals,
            bad_step=self.bad_step,
            monitor=monitor.to_dict(),
            history=tuple(self.history),
            train_seconds=self.seconds_before + seconds,
        )


@dataclasses.dataclass
class _SnapshotClock:
    """When the next snapshot is due: ``every`` seconds after the last one, checked at an
    epoch's end and between its steps; with ``every`` 0, at every epoch's end only."""

    every: float
    last: float = dataclasses.field(default_factory=time.perf_counter)

    def due(self, inside_epoch: bool) -> bool:
        if inside_epoch and self.every <= 0:
            return False
        return time.perf_counter() - self.last >= self.every

    def taken(self) -> None:
        self.last = time.perf_counter()


def fit(
    model: SequenceClassifier,
    config: TrainConfig,
    train: ArraySet,
    val: ArraySet,
    callbacks: Callback,
    *,
    resume: Callable[[TrainState], TrainSnapshot | None] | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY,
    stop: threading.Event | None = None,
    keep_last: bool = False,
) -> FitResult:
    """Train with early stopping on the monitored validation metric; return the best weights.

    Args:
      resume: given the freshly initialised state (host arrays, for its structure),
        returns the snapshot to continue from, or None to start afresh. A resumed run
        ends bit-identical (on CPU) to one that never stopped.
      checkpoint_every: ``callbacks.on_snapshot`` gets a snapshot at the end of an epoch,
        or between two steps of a long one, once this many seconds have passed since
        the last; 0 snapshots every epoch. Snapshots cost a device-to-host copy.
      stop: when set (by a signal handler), training snapshots after the current step
        and raises ``TrainingInterruptedError``.
      keep_last: return the last epoch's weights instead of the best (a refit, whose
        "validation" data is part of its training data, chooses nothing).
    """
    config = config.resolved(len(train))
    typical_steps = int(np.median(train.lengths))
    devices = data_devices(config.devices, config.batch_size, len(train), typical_steps)
    batch_size = device_batch_size(config.batch_size, len(train), devices)
    longest = (int(train.lengths.max()),)
    buckets = length_buckets(train.lengths, batch_size) if config.length_buckets else longest
    steps_per_epoch = int(bucket_batches(train.lengths, buckets, batch_size).sum())
    state = create_train_state(model, config, config.epochs * steps_per_epoch)
    weights = class_weights(train.labels, model.num_classes, config.class_weight)
    shardings = batch_sharding(devices)
    step_fn = make_ensemble_step(
        weights,
        config.label_smoothing,
        shardings,
        config.augment,
        fixed=train.scale_inputs + len(model.embeddings),
    )
    proba_fn = make_proba_fn(model)
    keys = member_keys(config.seed, config.ensemble)
    shuffle = np.random.default_rng(config.seed)
    monitor = _Monitor(config.monitor, config.ensemble)
    resumed = resume(jax.device_get(state)) if resume is not None else None
    if resumed is None:
        loop = _Loop(state, None, [], 1, 0, shuffle_state=shuffle.bit_generator.state)
    else:
        loop = _Loop.resumed(resumed)
        shuffle.bit_generator.state = resumed.shuffle_state
        monitor.load(resumed.monitor)
    if shardings is not None:
        loop.state, keys = place((loop.state, keys), shardings[1])
    callbacks.on_start(config.epochs, steps_per_epoch)

    if stop is not None and stop.is_set():
        raise TrainingInterruptedError(
            epoch=loop.epoch, step=0 if resumed is None else resumed.step, saved=bool(resumed)
        )
    started = time.perf_counter()
    clock = _SnapshotClock(checkpoint_every)

    def save_snapshot() -> None:
        callbacks.on_snapshot(loop.snapshot(monitor, time.perf_counter() - started))
        clock.taken()

    diverged_at = None
    while loop.epoch <= config.epochs:
        epoch_start = time.perf_counter()
        order = shuffle.permutation(len(train))
        batches = _train_batches(
            train, batch_size, order, buckets, shuffle, shardings, loop.batches_done
        )
        for batch in prefetch(batches):
            loop.state, metrics = step_fn(loop.state, batch, keys)
            loop.applied(metrics)
            callbacks.on_step(loop.epoch, loop.batches_done)
            interrupted = stop is not None and stop.is_set()
            if interrupted or (loop.batches_done < steps_per_epoch and clock.due(True)):
                save_snapshot()
                if interrupted:
                    raise TrainingInterruptedError(
                        epoch=loop.epoch, step=int(to_host(loop.state.step)[0]), saved=True
                    )
        loop.settle()
        totals = loop.totals
        if loop.bad_step is not None:
            step = epoch_first_step(loop.epoch, steps_per_epoch) + loop.bad_step - 1
            if loop.best_params is None:
                raise TrainingDivergedError(
                    f"the training loss became NaN or infinite at epoch {loop.epoch}, step "
                    f"{step}, before any epoch finished; lower --lr or check the data"
                )
            diverged_at = (loop.epoch, step)
            break
        val_loss, val_accuracy = log_loss_and_accuracy(
            member_proba(proba_fn, loop.state.params, val.inputs, val.lengths, devices=devices),
            val.labels,
        )
        improved = monitor.update(loop.epoch, val_loss, val_accuracy)
        if keep_last:
            improved = np.ones_like(improved)
        if improved.any():
            loop.best_params = _keep_improved(
                loop.best_params, to_host(loop.state.params), improved
            )
        record = EpochRecord(
            epoch=loop.epoch,
            step=int(to_host(loop.state.step)[0]),
            train_loss=float(np.mean(totals.loss_sum / totals.count)),
            train_accuracy=float(np.mean(totals.correct / totals.count)),
            val_loss=float(val_loss.mean()),
            val_accuracy=float(val_accuracy.mean()),
            seconds=time.perf_counter() - epoch_start,
            improved=bool(improved.any()),
        )
        loop.history.append(record)
        callbacks.on_epoch(record, loop.best_params if improved.any() else None)
        if monitor.stops(record, config):
            break
        loop.next_epoch(shuffle.bit_generator.state)
        if loop.epoch <= config.epochs and clock.due(False):
            save_snapshot()
    if loop.best_params is None:
        raise AssertionError("an epoch finished without choosing weights")
    val_proba = predict_proba(proba_fn, loop.best_params, val.inputs, val.lengths, devices=devices)
    ensemble_loss, ensemble_accuracy = log_loss_and_accuracy(val_proba, val.labels)
    return FitResult(
        params=loop.best_params,
        best_epochs=tuple(int(e) for e in monitor.best_epoch),
        member_val_accuracy=tuple(float(a) for a in monitor.best_accuracy),
        best_val_accuracy=float(ensemble_accuracy),
        best_val_loss=float(ensemble_loss),
        epochs_run=len(loop.history),
        steps=loop.history[-1].step,
        train_seconds=loop.seconds_before + time.perf_counter() - started,
        history=tuple(loop.history),
        diverged_at=diverged_at,
        devices=len(devices),
        resumed_from_epoch=None if resumed is None else resumed.epoch - 1,
        val_proba=val_proba,
    )


def _first_bad_step(known: int | None, step_losses: list[np.ndarray], done: int) -> int | None:
    """The first step (1-based, within the epoch) with a non-finite loss, given the one
    already known and the per-member losses of the last ``len(step_losses)`` steps."""
    if known is not None or not step_losses:
        return known
    bad = ~np.isfinite(np.stack(step_losses)).all(axis=1)
    if not bad.any():
        return None
    return done - len(step_losses) + 1 + int(np.argmax(bad))


def epoch_first_step(epoch: int, steps_per_epoch: int) -> int:
    """The 1-based number of the first optimizer step of ``epoch``."""
    return (epoch - 1) * steps_per_epoch + 1
