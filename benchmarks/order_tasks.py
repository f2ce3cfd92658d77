"""Synthetic tasks where the order of short events far apart decides the class.

Each sequence holds the same events in every class; only their order differs. The events lie
further apart than any small convolution's receptive field, so a convolutional network with
global average pooling sees the same sum of local features whatever the class and stays near
chance, while a recurrent model that carries state from one event to the next can solve them.

- ``order_pulses``: univariate, 300-500 steps (unequal lengths). One square pulse and one
  triangular pulse, each 4-6 steps wide with amplitude 0.8-1.2, at least 80 steps apart, in
  Gaussian noise (std 0.1). Both pulses have the same area, so even the per-class mean series
  over time agrees. Class: which comes first (``square_first`` / ``triangle_first``).
- ``order_channels``: three channels, 400 steps. One short spike (3-5 steps) in each channel,
  consecutive spikes at least 40 steps apart, in Gaussian noise (std 0.25). Class: the order in
  which the channels spike (``ABC``, ``ACB``, ... 6 classes).
- ``order_channels_long``: the same over 1,500 steps, spikes at least 150 apart: events a few
  steps wide in series long enough that the front end pools them by 64 before the recurrence.

Train and test sets are drawn with fixed seeds (one per task and split) and balanced by class.
Run alone, this writes ``NAME_train.npz`` and ``NAME_test.npz`` (``X`` float32 (N, T, F),
NaN-padded for unequal lengths, ``y`` strings, ``lengths`` where lengths differ)::

    python benchmarks/order_tasks.py --out DIR [--tasks order_pulses,order_channels]

``benchmarks/accuracy.py`` imports ``TASKS`` and ``make`` to run them beside the public sets.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

PULSE_NOISE = 0.1  # low enough that a matched filter tells the two shapes apart every time
SPIKE_NOISE = 0.25
SPLITS = {"train": 0, "test": 1}  # index into a task's sizes below


def _square(width: int) -> np.ndarray:
    return np.ones(width)


def _triangle(width: int) -> np.ndarray:
    """A tent over ``width`` steps with the area of the square pulse of that width."""
    centre = (width - 1) / 2
    tent = 1.0 - np.abs(np.arange(width) - centre) / (centre + 1)
    return tent * (width / tent.sum())


def _apart(rng: np.random.Generator, count: int, low: int, high: int, gap: int) -> np.ndarray:
    """``count`` sorted positions in [low, high) whose neighbours are at least ``gap`` apart.

    Uniform over all such sets: draw from a range shortened by the gaps, then add them back.
    """
    slack = high - low - (count - 1) * gap
    if slack < count:
        raise ValueError(f"no room for {count} events {gap} apart in [{low}, {high})")
    picks = np.sort(rng.choice(slack, size=count, replace=False))
    return low + picks + gap * np.arange(count)


def order_pulses(rng: np.random.Generator, per_class: int) -> tuple[list[np.ndarray], np.ndarray]:
    classes = ("square_first", "triangle_first")
    series, labels = [], []
    for label in np.repeat(np.arange(len(classes)), per_class):
        length = int(rng.integers(300, 501))
        x = rng.normal(0.0, PULSE_NOISE, length)
        widths = rng.integers(4, 7, size=2)
        first, second = _apart(rng, 2, 10, length - 10 - int(widths.max()), gap=80)
        shapes = (_square, _triangle) if label == 0 else (_triangle, _square)
        for start, shape, width in zip((first, second), shapes, widths, strict=True):
            x[start : start + width] += rng.uniform(0.8, 1.2) * shape(int(width))
        series.append(x[:, None])
        labels.append(classes[label])
    return series, np.array(labels)


def order_channels(
    rng: np.random.Generator, per_class: int, length: int = 400, gap: int = 40
) -> tuple[list[np.ndarray], np.ndarray]:
    channels = 3
    orders = list(itertools.permutations(range(channels)))
    names = ["".join("ABC"[c] for c in order) for order in orders]
    series, labels = [], []
    for label in np.repeat(np.arange(len(orders)), per_class):
        x = rng.normal(0.0, SPIKE_NOISE, (length, channels))
        starts = _apart(rng, channels, 10, length - 15, gap=gap)
        for start, channel in zip(starts, orders[label], strict=True):
            width = int(rng.integers(3, 6))
            x[start : start + width, channel] += rng.uniform(1.0, 1.5) * _triangle(width)
        series.append(x)
        labels.append(names[label])
    return series, np.array(labels)


# name -> (generator, per-class sizes (train, test), seed)
TASKS: dict[str, tuple[Callable, tuple[int, int], int]] = {
    "order_pulses": (order_pulses, (200, 300), 1201),
    "order_channels": (order_channels, (80, 100), 1202),
    "order_channels_long": (
        functools.partial(order_channels, length=1500, gap=150),
        (80, 100),
        1203,
    ),
}


def make(name: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One split of a task, shuffled with its fixed seed.

    Returns:
      X: float32[n, time, features], NaN beyond each sequence's length.
      y: str[n] class names, balanced.
      lengths: int64[n], or None when all sequences have the same length.
    """
    generate, sizes, seed = TASKS[name]
    rng = np.random.default_rng([seed, SPLITS[split]])
    series, labels = generate(rng, sizes[SPLITS[split]])
    order = rng.permutation(len(series))
    series, labels = [series[i] for i in order], labels[order]
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    X = np.full((len(series), int(lengths.max()), series[0].shape[1]), np.nan, np.float32)
    for i, s in enumerate(series):
        X[i, : len(s)] = s
    return X, labels, (lengths if lengths.min() < lengths.max() else None)


def write(name: str, split: str, folder: Path) -> Path:
    X, y, lengths = make(name, split)
    arrays = {"X": X, "y": y} if lengths is None else {"X": X, "y": y, "lengths": lengths}
    path = folder / f"{name}_{split}.npz"
    np.savez(path, **arrays)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for the NPZ files.")
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help="Comma-separated tasks (default: %(default)s)."
    )
    args = parser.parse_args(argv)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        for split in SPLITS:
            path = write(name, split, args.out)
            with np.load(path) as data:
                X, y = data["X"], data["y"]
                lengths = data["lengths"] if "lengths" in data else np.full(len(X), X.shape[1])
            classes, counts = np.unique(y, return_counts=True)
            balance = ", ".join(f"{c} {n}" for c, n in zip(classes, counts, strict=True))
            print(f"{path}: {len(X)} x {lengths.min()}-{lengths.max()} x {X.shape[2]}; {balance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
