"""A task where only the time between events decides the class: --time-features on and off.

Every session is a long CSV of 12-20 events with ISO-8601 timestamps (in several time
zones) and the same kinds of events in every class, drawn from one distribution: an event
code (0-4) and an amount. Only the rhythm differs, with the same average gap (60 s):

- ``steady``: gaps drawn around 60 s throughout;
- ``burst_then_wait``: the first half of the gaps short (about 6 s), the rest long;
- ``wait_then_burst``: the reverse.

Without the gaps a model sees three classes of identical event streams and can only guess
(about 1/3); with ``--time-features`` the default model should tell them apart. Runs the
real CLI (``python -m rnnfc_cli``) with default options otherwise, one fresh process per
command, and prints the test accuracy of each, with training seconds::

    python benchmarks/time_features.py [--seeds 0,1,2] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("steady", "burst_then_wait", "wait_then_burst")
SIZES = {"train": 600, "test": 600}
MEAN_GAP = 60.0
SHORT_GAP, LONG_GAP = 6.0, 114.0  # half the gaps of each, averaging MEAN_GAP
ZONES = (0, 2, -5, 9)  # hours east of UTC, one per session


def _gaps(rng: np.random.Generator, rhythm: str, count: int) -> np.ndarray:
    """``count`` gaps in seconds with the rhythm's shape, each jittered by +-50 %."""
    half = count // 2
    if rhythm == "steady":
        base = np.full(count, MEAN_GAP)
    else:
        first, then = (
            (SHORT_GAP, LONG_GAP) if rhythm == "burst_then_wait" else (LONG_GAP, SHORT_GAP)
        )
        base = np.concatenate([np.full(half, first), np.full(count - half, then)])
    return base * rng.uniform(0.5, 1.5, count)


def write_split(path: Path, split: str) -> None:
    """One split as a long CSV: id, time, event, amount, label (balanced classes)."""
    rng = np.random.default_rng(list(SIZES).index(split))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "time", "event", "amount", "label"])
        for i in range(SIZES[split]):
            rhythm = CLASSES[i % len(CLASSES)]
            events = int(rng.integers(12, 21))
            zone = datetime.timezone(datetime.timedelta(hours=int(rng.choice(ZONES))))
            start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
                seconds=float(rng.uniform(0, 30 * 86400))
            )
            offsets = np.concatenate([[0.0], np.cumsum(_gaps(rng, rhythm, events - 1))])
            codes = rng.integers(0, 5, events)
            amounts = rng.lognormal(3.0, 1.0, events)
            for offset, code, amount in zip(offsets, codes, amounts, strict=True):
                stamp = (start + datetime.timedelta(seconds=float(offset))).astimezone(zone)
                writer.writerow(
                    [f"{split}{i}", stamp.isoformat(), int(code), round(amount, 2), rhythm]
                )


def _rnnfc(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "rnnfc_cli", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"rnnfc {' '.join(args)}: exit {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="Comma-separated training seeds.")
    parser.add_argument("--work-dir", type=Path, help="Keep the CSV files and models here.")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="rnnfc-time-"))
    work.mkdir(parents=True, exist_ok=True)
    for split in SIZES:
        write_split(work / f"{split}.csv", split)
    print(f"{SIZES['train']} training / {SIZES['test']} test sessions, classes {CLASSES}")
    print("| options | seed | test accuracy | train s |")
    print("| --- | --- | --- | --- |")
    for flags in ([], ["--time-features"]):
        for seed in args.seeds.split(","):
            model = work / f"model_{'time' if flags else 'plain'}_{seed}"
            started = time.perf_counter()
            _rnnfc("train", str(work / "train.csv"), "-m", str(model), "--seed", seed,
                   "--force", "--json", "-q", *flags)  # fmt: skip
            seconds = time.perf_counter() - started
            metrics = _rnnfc("eval", str(model), str(work / "test.csv"), "--json", "-q")
            shown = " ".join(flags) or "defaults"
            print(f"| {shown} | {seed} | {metrics['accuracy']:.3f} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
