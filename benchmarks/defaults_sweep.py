"""Compare training settings across datasets and seeds: how rnnfc's defaults were chosen.

Runs in one process through the library (``rnnfc_cli.api``), so compiled programs are
shared between runs. Datasets are NPZ train/test pairs named ``NAME_train.npz`` and
``NAME_test.npz`` in ``--data-dir`` (``benchmarks/accuracy.py --work-dir DIR`` writes them
from aeon's bundled UCR/UEA sets). Each variant is a set of ``rnnfc train`` options given
as JSON on the command line, e.g.::

    python benchmarks/defaults_sweep.py --data-dir /tmp/ucr --datasets GunPoint,BasicMotions \\
        --seeds 0,1 --variant base='{}' --variant mean='{"pool": "mean"}'

Keys are ``ModelConfig`` fields (cell, hidden, pool, bidirectional, patch, ...),
``TrainConfig`` fields (lr, epochs, ensemble, ...) or ``normalize``. Prints one line per
run to stderr and a table of mean test accuracy (and mean train seconds) to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rnnfc_cli import api
from rnnfc_cli.config import ModelConfig, TrainConfig

_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)} - {"num_features", "num_classes"}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def run(data_dir: Path, dataset: str, seed: int, options: dict, work: Path) -> dict:
    model_options = {k: v for k, v in options.items() if k in _MODEL_KEYS}
    if "dense" in model_options:
        model_options["dense"] = tuple(model_options["dense"])
    train_options = {k: v for k, v in options.items() if k in _TRAIN_KEYS}
    unknown = set(options) - _MODEL_KEYS - _TRAIN_KEYS - {"normalize"}
    if unknown:
        raise SystemExit(f"unknown option(s) {sorted(unknown)}")
    model_dir = work / f"{dataset}-{seed}-{time.monotonic_ns()}"
    summary = api.train_model(
        api.TrainRequest(
            data=str(data_dir / f"{dataset}_train.npz"),
            model_dir=model_dir,
            model_options=model_options,
            train=TrainConfig(**{"seed": seed, **train_options}),
            normalize=options.get("normalize", "feature"),
        )
    )
    report, _ = api.evaluate(model_dir, str(data_dir / f"{dataset}_test.npz"))
    return {
        "accuracy": report.accuracy,
        "seconds": summary["train_seconds"],
        "epochs": summary["epochs_run"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--datasets", required=True, help="comma-separated names")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--variant", action="append", required=True, help="NAME=JSON options")
    args = parser.parse_args()
    variants = {}
    for item in args.variant:
        name, _, options = item.partition("=")
        variants[name] = json.loads(options or "{}")
    datasets = args.datasets.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            for name, options in variants.items():
                for seed in seeds:
                    out = run(args.data_dir, dataset, seed, options, Path(tmp))
                    results.setdefault((name, dataset), []).append(out)
                    print(
                        f"{dataset:22s} {name:14s} seed {seed}: acc {out['accuracy']:.4f} "
                        f"{out['seconds']:6.1f}s {out['epochs']} epochs",
                        file=sys.stderr,
                        flush=True,
                    )
    header = f"| variant | {' | '.join(datasets)} | mean acc | mean s |"
    print(header)
    print("|" + "---|" * (len(datasets) + 3))
    for name in variants:
        accs = [statistics.mean(r["accuracy"] for r in results[(name, d)]) for d in datasets]
        secs = [statistics.mean(r["seconds"] for r in results[(name, d)]) for d in datasets]
        cells = " | ".join(f"{a:.3f} ({s:.0f}s)" for a, s in zip(accs, secs, strict=True))
        print(f"| {name} | {cells} | {statistics.mean(accs):.3f} | {statistics.mean(secs):.0f} |")


if __name__ == "__main__":
    main()
