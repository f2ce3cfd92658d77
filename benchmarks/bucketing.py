"""Epoch time with and without length bucketing on variable-length data.

Generates ``--n`` sequences whose lengths follow a log-normal law (median ``--median``,
capped at ``--max-length``), then trains the default model for ``--epochs`` epochs through
``rnnfc_cli.train.fit`` twice: padded to the longest sequence, and in length buckets.
Reports the median epoch time after the first (compiling) epoch and the padded steps per
epoch. Run by hand: ``python benchmarks/bucketing.py``.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from timing import EpochTimes

from rnnfc_cli import runtime, train
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.models import build_model


def main() -> None:
    runtime.configure_jax()  # rnnfc's XLA flags and cache, as the CLI has them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--median", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(args.median), 0.8, args.n), 4, args.max_length)
    lengths = lengths.astype(np.int32)
    inputs = rng.normal(size=(args.n, int(lengths.max()), 4)).astype(np.float32)
    inputs[np.arange(inputs.shape[1])[None, :] >= lengths[:, None]] = 0.0
    data = train.ArraySet(inputs, lengths, rng.integers(0, 3, args.n).astype(np.int32))
    val = train.ArraySet(inputs[:256], lengths[:256], data.labels[:256])
    model = build_model(ModelConfig(num_features=4, num_classes=3, patch=1))
    base = dict(epochs=args.epochs, min_steps=0, patience=1000)
    print(
        f"{args.n} sequences, lengths {lengths.min()}-{lengths.max()} "
        f"(median {int(np.median(lengths))}); buckets {train.length_buckets(lengths, 32)}"
    )
    results = {}
    for name, bucketed in (("padded to longest", False), ("length buckets", True)):
        config = TrainConfig(**base, length_buckets=bucketed)
        longest = (int(lengths.max()),)
        buckets = train.length_buckets(lengths, config.batch_size) if bucketed else longest
        steps = train.padded_steps(lengths, buckets, config.batch_size)
        times = EpochTimes()
        train.fit(model, config, data, val, times)
        results[name] = statistics.median(times.seconds[1:])
        print(f"{name:18s} {results[name]:7.2f} s/epoch  {steps:9d} padded steps/epoch")
    ratio = results["padded to longest"] / results["length buckets"]
    print(f"speed-up {ratio:.2f}x")


if __name__ == "__main__":
    main()
