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

from rnnfc_cli.models import SequenceClassifier
from rnnfc_cli.parallel import (
    InFlight,
    batch_sharding,
    data_devices,
    device_batch_size,
    place,
    to_host,
)

PREDICT_BATCH = 256

ProbaFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def member_keys(seed: int, members: int) -> jax.Array:
    """One PRNG key per ensemble member: seeds ``seed, seed + 1, ...``."""
    return jax.vmap(jax.random.key)(seed + jnp.arange(members))


def init_params(model: SequenceClassifier, keys: jax.Array) -> Any:
    """Stacked parameters, one set per key, initialised in one compiled call."""

    def init(key):
        inputs = jnp.zeros((1, 1, model.num_features), jnp.float32)
        return model.init(key, inputs, jnp.ones((1,), jnp.int32), train=False)["params"]

    return jax.jit(jax.vmap(init))(keys)


def abstract_params(model: SequenceClassifier, members: int) -> Any:
    """Shapes and dtypes of ``members`` stacked parameter sets, without computing any."""
    return jax.eval_shape(lambda: init_params(model, member_keys(0, members)))


def make_proba_fn(model: SequenceClassifier) -> ProbaFn:
    """A compiled ``(stacked params, inputs, lengths) -> float32[members, batch, classes]``."""

    @jax.jit
    def proba_fn(params, inputs, lengths):
        def member(p):
            return jax.nn.softmax(model.apply({"params": p}, inputs, lengths, train=False))

        return jax.vmap(member)(params)

    return proba_fn


def member_proba(
    proba_fn: ProbaFn,
    params: Any,
    inputs: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = PREDICT_BATCH,
    devices: list[jax.Device] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Each member's class probabilities, float64[members, n, classes], in fixed batches
    split over ``devices`` (default: as many local devices as split a batch evenly).

    ``on_batch(rows)`` is called as each batch finishes, for progress displays; the
    batches in flight are then bounded (``parallel.InFlight``), so that it reports what
    is done.
    """
    n = len(inputs)
    devices = devices or data_devices(0, batch_size, n)
    shardings = batch_sharding(devices)
    batch_size = device_batch_size(batch_size, n, devices)
    if shardings is not None:
        params = place(params, shardings[1])
    chunks = []
    in_flight = None if on_batch is None else InFlight()
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
        batch = (batch_inputs, batch_lengths.astype(np.int32))
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
