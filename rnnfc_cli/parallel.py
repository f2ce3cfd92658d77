"""Devices, meshes and placement: how batches are split over devices and processes.

Training and prediction both run data parallel. The parameters are replicated and each
batch is split along its first axis over the chosen devices (``data_devices``,
``batch_sharding``); in a multi-process run (``jax.distributed``) these are every
process's devices, and values move between host and devices with ``place`` and
``to_host``. ``InFlight`` bounds how far the devices may run ahead of the host.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnfc_cli.errors import BadInputError

# On CPU a device's share of a batch must hold this much work for splitting to pay:
# below it, the per-step work of each device is too small to outweigh the gradient sum.
# Either this many rows (benchmarks/throughput.py: 2 devices ran 64-row LSTM/GRU batches
# 1.3-2x faster than 1; 32-row batches of 32 steps no faster) ...
MIN_ROWS_PER_CPU_DEVICE = 32
# ... or at least MIN_SPLIT_ROWS rows of sequences this many steps long in all (rows x
# steps). Measured with the default model (conv front end, bidirectional LSTM) at batch
# 32 on 2 cores, 16 rows a device against 32 on one: 0.95x at 32 steps, 1.11x at 64,
# 1.25x at 128, 1.4x at 512, 1.15x at 1,460; a bidirectional LSTM alone at 128 steps 1.25x.
MIN_ROW_STEPS_PER_CPU_DEVICE = 1024
MIN_SPLIT_ROWS = 16


def _worth_splitting(rows: int, steps: int | None) -> bool:
    """Whether a CPU device's share of ``rows`` rows of ``steps`` steps pays for its split."""
    if rows >= MIN_ROWS_PER_CPU_DEVICE:
        return True
    return (
        steps is not None
        and rows >= MIN_SPLIT_ROWS
        and rows * steps >= MIN_ROW_STEPS_PER_CPU_DEVICE
    )


def data_devices(
    count: int = 0,
    batch_size: int | None = None,
    examples: int | None = None,
    steps: int | None = None,
) -> list[jax.Device]:
    """The local devices to split batches of ``batch_size`` (out of ``examples``, typically
    ``steps`` long) over.

    ``count`` > 0 takes the first ``count``. For 0 it is the most, up to all of them,
    that split such a batch evenly (on CPU, into shares worth splitting: see
    ``MIN_ROWS_PER_CPU_DEVICE``), so the batch size stays what was asked; when one
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
            limit = max(
                d for d in range(1, limit + 1) if d == 1 or _worth_splitting(rows // d, steps)
            )
        if examples is not None and examples <= batch_size:
            count = min(limit, examples)
        else:
            count = max(d for d in range(1, limit + 1) if batch_size % d == 0)
    return available[: count or len(available)]


def batch_sharding(devices: list[jax.Device]) -> tuple[NamedSharding, NamedSharding] | None:
    """(split along the batch axis, replicated) over ``devices``; None for one device.

    The parameters are placed replicated and each batch split. Prediction is then data
    parallel by itself (rows are independent); training reduces across the split with an
    explicit ``psum`` (``train.make_ensemble_step`` maps its step with ``shard_map``).
    """
    if len(devices) == 1:
        return None
    mesh = Mesh(np.array(devices), ("data",))
    return NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())


def device_batch_size(batch_size: int, examples: int, devices: list[jax.Device]) -> int:
    """``batch_size`` capped at ``examples``, rounded up to split evenly over ``devices``."""
    batch_size = max(1, min(batch_size, examples))
    return -(-batch_size // len(devices)) * len(devices)


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


# Dispatched calls the devices may run ahead of the host. Several CPU devices in one
# process sum gradients through an in-process rendezvous; with a hundred or more steps
# queued (JAX dispatches asynchronously), XLA:CPU (jax 0.10) left one device waiting at
# the rendezvous for ever and aborted the process after 40 s. Two steps in flight keep
# the host's batch preparation overlapped with the computation and never hung in
# stress runs; one at a time cost about 10 % on small batches.
IN_FLIGHT = 2


class InFlight:
    """Results of dispatched calls that may still be running: after each ``add``, the
    oldest are waited for (and their ``on_done`` called, in order) until fewer than
    ``depth`` are left, so the next call makes at most ``depth`` in flight."""

    def __init__(self, depth: int = IN_FLIGHT):
        self.depth = depth
        self.pending: collections.deque = collections.deque()

    def add(self, result: Any, on_done: Callable[[], None] | None = None) -> None:
        self.pending.append((result, on_done))
        while len(self.pending) >= self.depth:
            self._finish_oldest()

    def drain(self) -> None:
        """Wait for every pending result."""
        while self.pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        result, on_done = self.pending.popleft()
        jax.block_until_ready(result)
        if on_done is not None:
            on_done()
