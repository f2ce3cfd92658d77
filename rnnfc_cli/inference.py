"""Inference without the optimizer: stacked parameters, compiled probabilities, batching.

Kept apart from ``train`` so that ``rnnfc predict`` and ``rnnfc eval`` never import optax.
Parameters always carry a leading ensemble-member axis (of size 1 for a single model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.models import SequenceClassifier

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


# On CPU a device's share of a batch must be at least this many rows for splitting to
# pay: below it, the per-step work of each device's scan is too small to outweigh the
# gradient sum (measured with benchmarks/throughput.py: 2 devices ran 64-row LSTM/GRU
# batches 1.3-2x faster than 1; 32-row batches no faster, sample_data's default model
# slower).
MIN_ROWS_PER_CPU_DEVICE = 32


def data_devices(
    count: int = 0, batch_size: int | None = None, examples: int | None = None
) -> list[jax.Device]:
    """The local devices to split batches of ``batch_size`` (out of ``examples``) over.

    ``count`` > 0 takes the first ``count``. For 0 it is the most, up to all of them,
    that split such a batch evenly (on CPU, into shares of at least
    ``MIN_ROWS_PER_CPU_DEVICE`` rows), so the batch size stays what was asked; when one
    batch holds every example, it is padded to split over the devices instead. In a
    multi-process run (``jax.distributed``), every device of every process, and
    ``count`` is ignored.
    """
    if jax.process_count() > 1:
        return jax.devices()
    available = jax.local_devices()
    if count > len(available):
        raise BadInputError(
            f"--devices {count}: only {len(available)} {jax.default_backend()} device(s) here"
        )
    if count == 0 and batch_size is not None:
        rows = min(batch_size, examples) if examples is not None else batch_size
        limit = len(available)
        if available[0].platform == "cpu":
            limit = max(1, min(limit, rows // MIN_ROWS_PER_CPU_DEVICE))
        if examples is not None and examples <= batch_size:
            count = min(limit, examples)
        else:
            count = max(d for d in range(1, limit + 1) if batch_size % d == 0)
    return available[: count or len(available)]


def batch_sharding(devices: list[jax.Device]) -> tuple[NamedSharding, NamedSharding] | None:
    """(split along the batch axis, replicated) over ``devices``; None for one device.

    With replicated parameters and split batches, a jitted function runs data parallel:
    XLA partitions it and adds the reductions (the gradient all-reduce when training).
    """
    if len(devices) == 1:
        return None
    mesh = Mesh(np.array(devices), ("data",))
    return NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())


def device_batch_size(batch_size: int, examples: int, devices: list[jax.Device]) -> int:
    """``batch_size`` capped at ``examples``, rounded up to split evenly over ``devices``."""
    batch_size = max(1, min(batch_size, examples))
    return -(-batch_size // len(devices)) * len(devices)


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

    ``on_batch(rows)`` is called as each batch finishes, for progress displays; batches
    are then kept at most ``IN_FLIGHT`` deep, so that it reports what is done.
    """
    n = len(inputs)
    devices = devices or data_devices(0, batch_size, n)
    shardings = batch_sharding(devices)
    batch_size = device_batch_size(batch_size, n, devices)
    if shardings is not None:
        params = place(params, shardings[1])
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
        batch = (batch_inputs, batch_lengths.astype(np.int32))
        if shardings is not None:
            batch = jax.device_put(batch, shardings[0])
        chunks.append(proba_fn(params, *batch))
        if on_batch is not None and len(chunks) > IN_FLIGHT:
            finished = len(chunks) - 1 - IN_FLIGHT
            jax.block_until_ready(chunks[finished])
            on_batch(min(batch_size, n - finished * batch_size))
    if on_batch is not None:
        for finished in range(max(0, len(chunks) - IN_FLIGHT), len(chunks)):
            jax.block_until_ready(chunks[finished])
            on_batch(min(batch_size, n - finished * batch_size))
    return np.concatenate([np.asarray(c, np.float64) for c in to_host(chunks)], 1)[:, :n]


# Batches dispatched ahead of the one a progress display waits for: enough to keep a
# device busy while the host prepares the next.
IN_FLIGHT = 2


def place(tree: Any, sharding: NamedSharding) -> Any:
    """``jax.device_put`` onto ``sharding``, also when it spans other processes' devices
    (possible from host values only: device arrays go through the host unless they are
    placed so already)."""

    def put(leaf):
        if isinstance(leaf, jax.Array):
            if leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
                return leaf
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                data = jax.device_put(to_host(jax.random.key_data(leaf)), sharding)
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
            leaf = to_host(leaf)
        return jax.device_put(leaf, sharding)

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """``jax.device_get``, also for arrays split over the devices of several processes
    (gathered from all of them: every process gets the whole value)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def gather(array):
        if isinstance(array, jax.Array) and not array.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(array, tiled=True))
        return jax.device_get(array)

    return jax.tree.map(gather, tree)


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
