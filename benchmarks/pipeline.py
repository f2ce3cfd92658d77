"""Share of an epoch spent inside compiled train steps on a large dataset.

Trains the default model (through ``rnnfc_cli.train.fit``, the loop ``rnnfc train`` runs)
on ``--n`` random sequences for two epochs and takes the second epoch's wall time (no
compiling; validation on 256 sequences included). Then runs the same number of compiled
steps back to back on one batch already on the device: the compute-only time. The ratio
is the share of the epoch spent in compiled steps; the rest is batch assembly in Python
and NumPy that asynchronous dispatch did not hide.

``--on-disk`` keeps the inputs in a memory-mapped .npy file, read, scaled and padded per
batch as ``rnnfc train`` does for large .npy inputs; ``--no-prefetch`` assembles batches
in line instead of in the background thread, to measure what the thread hides. Run by hand:
``python benchmarks/pipeline.py [--on-disk] [--no-prefetch]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from timing import EpochTimes

from rnnfc_cli import preprocessing, runtime, train
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.inference import member_keys
from rnnfc_cli.lazy import LazyInputs
from rnnfc_cli.models import build_model


class ColdAfterFirstEpoch(EpochTimes):
    """Drops the page cache once the first epoch ends (Linux, root)."""

    def on_epoch(self, record, params) -> None:
        super().on_epoch(record, params)
        if record.epoch == 1:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("1\n")


def main() -> None:
    runtime.configure_jax()  # rnnfc's XLA flags and cache, as the CLI has them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=32, help="time steps per sequence")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--on-disk", action="store_true", help="memory-mapped .npy inputs")
    parser.add_argument("--no-prefetch", action="store_true", help="assemble batches in line")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="with --on-disk: drop the page cache after the first epoch (root), so the "
        "timed epoch reads the file from disk",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.n, args.steps, args.features)
    inputs = rng.normal(size=shape).astype(np.float32)
    lengths = np.full(args.n, args.steps, np.int32)
    labels = rng.integers(0, 4, args.n).astype(np.int32)
    data = train.ArraySet(inputs, lengths, labels)
    val = train.ArraySet(inputs[:256], lengths[:256], labels[:256])
    if args.on_disk:
        path = Path(tempfile.mkdtemp()) / "inputs.npy"
        np.save(path, inputs)
        prep = preprocessing.Preprocessing(
            ("0", "1", "2", "3"), "int", (0.0,) * args.features, (1.0,) * args.features, None, "npy"
        )
        scale = functools.partial(preprocessing.scale_block, prep)
        on_disk = LazyInputs.of(np.load(path, mmap_mode="r"), lengths).with_transform(scale)
        data = train.ArraySet(on_disk, lengths, labels)
    if args.no_prefetch:
        train.prefetch = lambda items, depth=2: items
    model = build_model(ModelConfig(num_features=args.features, num_classes=4, patch=1))
    config = TrainConfig(epochs=2, min_steps=0, patience=1000)

    times = ColdAfterFirstEpoch() if args.cold else EpochTimes()
    train.fit(model, config, data, val, times)
    epoch_seconds = times.seconds[1]

    state = train.create_train_state(model, config, times.steps_per_epoch)
    step = train.make_ensemble_step(np.ones(4, np.float32), 0.0)
    batch = jax.device_put(
        train.Batch(inputs[:32], lengths[:32], labels[:32], np.ones(32, np.float32))
    )
    keys = member_keys(0, 1)
    state, metrics = step(state, batch, keys)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(times.steps_per_epoch):
        state, metrics = step(state, batch, keys)
    jax.block_until_ready(metrics)
    compute_seconds = time.perf_counter() - started

    where = "memory-mapped .npy" if args.on_disk else "in memory"
    how = "in line" if args.no_prefetch else "in a background thread"
    print(f"{args.n} sequences x {args.steps} steps x {args.features} features, batch 32")
    print(f"inputs {where}, batches assembled {how}")
    print(f"epoch (second, incl. validation): {epoch_seconds:8.2f} s")
    print(f"{times.steps_per_epoch} compiled steps alone:  {compute_seconds:8.2f} s")
    print(f"share of the epoch in compiled steps: {compute_seconds / epoch_seconds:.1%}")


if __name__ == "__main__":
    main()
