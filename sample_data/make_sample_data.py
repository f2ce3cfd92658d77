"""Write the bundled sample datasets: ``python sample_data/make_sample_data.py``.

Two synthetic problems, each with train and test splits:

* ``motion``: 3-axis accelerometer-like recordings of four activities (walk, run, idle,
  jump), 40-100 steps long, as long CSV (``motion_*.csv``: id, time, acc_x, acc_y, acc_z,
  label) and as NPZ (``motion_*.npz``: X padded with NaN, y, lengths).
* ``cbf``: the classic cylinder / bell / funnel shapes with integer labels 0, 1, 2, 60-128
  steps long, as wide CSV (``cbf_*.csv``: label, t0 ... t127; short rows end in empty cells).
* ``sessions``: web sessions as an event log (``sessions_*.csv``: session, time as ISO-8601
  timestamps, page, action, dwell seconds, label), 8-30 events each. Every session visits
  the search, product and cart pages once, among others; the order of those three decides
  the class (purchase, compare or abandon), so counting pages cannot tell them apart.
* ``dna``: reads of 60-100 bases, one per row (``dna_*.csv``: read, label); every read
  holds the motifs TATAAT and GGGCGG, and which comes first decides the class.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ACTIVITIES = ("walk", "run", "idle", "jump")
CBF_STEPS = 128


def motion_sequence(rng: np.random.Generator, activity: str) -> np.ndarray:
    """One recording, float[length, 3]."""
    length = int(rng.integers(40, 101))
    t = np.arange(length) / 20.0  # 20 Hz
    phase = rng.uniform(0, 2 * np.pi)
    if activity == "walk":
        freq, amp = rng.uniform(1.6, 2.2), rng.uniform(0.8, 1.2)
        base = np.stack(
            [
                amp * np.sin(2 * np.pi * freq * t + phase),
                0.4 * amp * np.sin(4 * np.pi * freq * t + phase),
                0.2 * np.cos(2 * np.pi * freq * t + phase),
            ],
            axis=1,
        )
    elif activity == "run":
        freq, amp = rng.uniform(2.6, 3.4), rng.uniform(1.0, 1.6)
        base = np.stack(
            [
                amp * np.sin(2 * np.pi * freq * t + phase),
                0.6 * amp * np.sin(4 * np.pi * freq * t + phase),
                0.5 * amp * np.abs(np.sin(2 * np.pi * freq * t + phase)),
            ],
            axis=1,
        )
    elif activity == "idle":
        drift = np.cumsum(rng.normal(0, 0.05, (length, 3)), axis=0)
        base = drift + np.array([0.0, 0.0, 0.1])
    else:  # jump: quiet with a few sharp vertical bursts
        base = np.zeros((length, 3))
        for start in rng.choice(length - 6, size=int(rng.integers(1, 4)), replace=False):
            burst = np.hanning(6) * rng.uniform(2.0, 3.5)
            base[start : start + 6, 2] += burst
            base[start : start + 6, 0] += 0.3 * burst * rng.choice([-1, 1])
    return base + rng.normal(0, 0.35, base.shape)


def cbf_sequence(rng: np.random.Generator, shape: int) -> np.ndarray:
    """Cylinder (0), bell (1) or funnel (2) on noise, float[length]."""
    length = int(rng.integers(60, CBF_STEPS + 1))
    a = int(rng.integers(length // 8, length // 4))
    b = a + int(rng.integers(length // 4, length // 2))
    t = np.arange(length)
    inside = (t >= a) & (t <= b)
    height = 6 + rng.normal()
    if shape == 0:
        signal = height * inside
    elif shape == 1:
        signal = height * inside * (t - a) / (b - a)
    else:
        signal = height * inside * (b - t) / (b - a)
    return signal + rng.normal(size=length)


def write_motion(rng: np.random.Generator, name: str, count: int) -> None:
    labels = [ACTIVITIES[i % len(ACTIVITIES)] for i in range(count)]
    rng.shuffle(labels)
    sequences = [motion_sequence(rng, label) for label in labels]
    with (HERE / f"motion_{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "time", "acc_x", "acc_y", "acc_z", "label"])
        for number, (seq, label) in enumerate(zip(sequences, labels, strict=True)):
            for step, row in enumerate(seq):
                writer.writerow([f"rec{number:04d}", step, *(f"{v:.4f}" for v in row), label])
    lengths = np.array([len(s) for s in sequences])
    padded = np.full((count, lengths.max(), 3), np.nan, dtype=np.float32)
    for i, seq in enumerate(sequences):
        padded[i, : len(seq)] = np.round(seq, 4)
    np.savez_compressed(HERE / f"motion_{name}.npz", X=padded, y=np.array(labels), lengths=lengths)


def write_cbf(rng: np.random.Generator, name: str, count: int) -> None:
    with (HERE / f"cbf_{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", *(f"t{i}" for i in range(CBF_STEPS))])
        for i in range(count):
            shape = int(rng.integers(3)) if i >= 3 else i
            seq = cbf_sequence(rng, shape)
            cells = [f"{v:.3f}" for v in seq] + [""] * (CBF_STEPS - len(seq))
            writer.writerow([shape, *cells])


# The order of the three pages every session visits, by class.
SESSION_ORDERS = {
    "purchase": ("search", "product", "cart"),
    "compare": ("cart", "search", "product"),
    "abandon": ("product", "cart", "search"),
}
OTHER_PAGES = ("home", "help", "account", "offers", "reviews")
ACTIONS = ("view", "click", "scroll")


def write_sessions(rng: np.random.Generator, name: str, count: int) -> None:
    start = np.datetime64("2026-03-01T08:00:00")
    with (HERE / f"sessions_{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["session", "time", "page", "action", "dwell", "label"])
        for number in range(count):
            label = tuple(SESSION_ORDERS)[number % len(SESSION_ORDERS)]
            steps = int(rng.integers(8, 31))
            pages = list(rng.choice(OTHER_PAGES, steps))
            key_steps = np.sort(rng.choice(steps, 3, replace=False))
            for step, page in zip(key_steps, SESSION_ORDERS[label], strict=True):
                pages[step] = page
            at = start + np.timedelta64(int(rng.integers(0, 30 * 86400)), "s")
            for page in pages:
                dwell = float(rng.gamma(2.0, 8.0 if page != "cart" else 15.0))
                action = ACTIONS[int(rng.integers(len(ACTIONS)))]
                writer.writerow(
                    [f"{name}-{number:04d}", str(at), page, action, f"{dwell:.1f}", label]
                )
                at += np.timedelta64(int(dwell) + 1, "s")


DNA_MOTIFS = ("TATAAT", "GGGCGG")


def write_dna(rng: np.random.Generator, name: str, count: int) -> None:
    with (HERE / f"dna_{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["read", "label"])
        for number in range(count):
            label = ("tata_first", "gc_first")[number % 2]
            bases = list(rng.choice(list("ACGT"), int(rng.integers(60, 101))))
            first, second = DNA_MOTIFS if label == "tata_first" else DNA_MOTIFS[::-1]
            a = int(rng.integers(0, len(bases) // 2 - 6))
            b = int(rng.integers(len(bases) // 2, len(bases) - 6))
            bases[a : a + 6], bases[b : b + 6] = first, second
            writer.writerow(["".join(bases), label])


def main() -> None:
    rng = np.random.default_rng(20261127)
    write_motion(rng, "train", 320)
    write_motion(rng, "test", 160)
    write_cbf(rng, "train", 300)
    write_cbf(rng, "test", 150)
    write_sessions(rng, "train", 600)
    write_sessions(rng, "test", 300)
    write_dna(rng, "train", 600)
    write_dna(rng, "test", 300)


if __name__ == "__main__":
    main()
