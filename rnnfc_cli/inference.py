"""Inference without the optimizer: stacked parameters, compiled probabilities, batching.

Kept apart from ``train`` so that ``rnnfc predict`` and ``rnnfc eval`` never import optax.
Parameters always carry a leading ensemble-member axis (of size 1 for a single model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnfc_cli.config import PREDICT_BATCH
from rnnfc_cli.models import SequenceClassifier
from rnnfc_cli.parallel import (
    InFlight,
    batch_sharding,
    data_devices,
    device_batch_size,
    place,
    to_host,
)

# Batches are padded up to a few sizes (rows to a power of two, steps to a multiple of an
# eighth of theirs) so that predicting 100 sequences and then 101, or files whose longest
# sequence differs by a step, run one compiled program (from the compilation cache in a
# later process) instead of compiling each. Padding never changes a prediction; past 64
# steps it adds at most an eighth.
MIN_COMPILED_ROWS = 8
MIN_STEP_GRAIN = 8

ProbaFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
# Compiled functions kept per process (one per model, see ``_initializer``): enough for a
# training, its refit and an evaluation, bounded for a library caller sweeping many models.
COMPILED_PER_PROCESS = 16


def member_keys(seed: int, members: int) -> jax.Array:
    """One PRNG key per ensemble member: seeds ``seed, seed + 1, ...``."""
    return jax.vmap(jax.random.key)(seed + jnp.arange(members))


def init_params(model: SequenceClassifier, keys: jax.Array) -> Any:
    """Stacked parameters, one set per key, initialised in one compiled call."""
    return _initializer(model)(keys)


# One compiled function per model (Flax modules compare and hash by their fields), so
# that a second training of the same model in one process (the refit), or its evaluation
# after training, neither traces nor compiles again.
@functools.lru_cache(maxsize=COMPILED_PER_PROCESS)
def _initializer(model: SequenceClassifier) -> Callable[[jax.Array], Any]:
    def init(key):
        inputs = jnp.zeros((1, 1, model.num_features), jnp.float32)
        return model.init(key, inputs, jnp.ones((1,), jnp.int32), train=False)["params"]

    return jax.jit(jax.vmap(init))


def abstract_params(model: SequenceClassifier, members: int) -> Any:
    """Shapes and dtypes of ``members`` stacked parameter sets, without computing any."""
    return jax.eval_shape(lambda: init_params(model, member_keys(0, members)))


@functools.lru_cache(maxsize=COMPILED_PER_PROCESS)
def make_proba_fn(model: SequenceClassifier) -> ProbaFn:
    """A compiled ``(stacked params, inputs, lengths) -> float32[members, batch, classes]``,
    one per model (see ``_initializer``)."""

    @jax.jit
    def proba_fn(params, inputs, lengths):
        def member(p):
            return jax.nn.softmax(model.apply({"params": p}, inputs, lengths, train=False))

        return jax.vmap(member)(params)

    return proba_fn


def compiled_rows(n: int, batch_size: int) -> int:
    """Rows of each compiled batch for ``n`` sequences: ``n`` rounded up to a power of
    two (at least ``MIN_COMPILED_ROWS``), at most ``batch_size``."""
    return min(batch_size, max(MIN_COMPILED_ROWS, 1 << (n - 1).bit_length()))


def compiled_steps(steps: int) -> int:
    """Time steps of each compiled batch for sequences up to ``steps`` long: ``steps``
    rounded up to a multiple of an eighth of its power of two (at least
    ``MIN_STEP_GRAIN``)."""
    grain = max(MIN_STEP_GRAIN, 1 << max(steps.bit_length() - 4, 0))
    return -(-steps // grain) * grain


def member_proba(
    proba_fn: ProbaFn,
    params: Any,
    inputs: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = PREDICT_BATCH,
    devices: list[jax.Device] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Each member's class probabilities, float64[members, n, classes], in batches padded
    to ``compiled_rows`` x ``compiled_steps`` and split over ``devices`` (default: as many
    local devices as split a batch evenly).

    ``on_batch(rows)`` is called as each batch finishes, for progress displays; the
    batches in flight are then bounded (``parallel.InFlight``), so that it reports what
    is done.
    """
    n, steps = inputs.shape[:2]
    devices = devices or data_devices(0, batch_size, n)
    shardings = batch_sharding(devices)
    batch_size = compiled_rows(n, batch_size)
    batch_size = device_batch_size(batch_size, batch_size, devices)
    if shardings is not None:
        params = place(params, shardings[1])
    chunks = []
    in_flight = None if on_batch is None else InFlight()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch_inputs = np.zeros(
            (batch_size, compiled_steps(steps), *inputs.shape[2:]), inputs.dtype
        )
        batch_inputs[: stop - start, :steps] = inputs[start:stop]
        batch_lengths = np.ones(batch_size, np.int32)  # padding rows: one step of zeros
        batch_lengths[: stop - start] = lengths[start:stop]
        batch = (batch_inputs, batch_lengths)
        if shardings is not None:
            batch = jax.device_put(batch, shardings[0])
        chunks.append(proba_fn(params, *batch))
        if in_flight is not None:
            in_flight.add(chunks[-1], functools.partial(on_batch, stop - start))
    if in_flight is not None:
        in_flight.drain()
    return np.concatenate([np.asarray(c, np.float64) for c in to_host(chunks)], 1)[:, :n]


def predict_proba(
    proba_fn: ProbaFn,
    params: Any,
    inputs: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = PREDICT_BATCH,
    devices: list[jax.Device] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Ensemble class probabilities float64[n, classes]: the members' average."""
    proba = member_proba(proba_fn, params, inputs, lengths, batch_size, devices, on_batch)
    return proba.mean(axis=0)
