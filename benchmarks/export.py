"""Serving an exported model: onnxruntime on the ONNX file against ``rnnfc predict``.

Trains a model with rnnfc's defaults on ``sample_data/motion_train.csv`` (``--epochs 2``:
the architecture is the default one, only the training is short), exports it with
``rnnfc export -o model.onnx`` and measures, on the sample's test sequences (99 steps,
3 features):

- **a fresh process labelling 100 sequences**: ``python serve.py`` (numpy and
  onnxruntime alone: load the file, read the NPZ, run, print one label per line) against
  ``rnnfc predict MODEL data.npz`` with a warm compile cache (rnnfc's state after its
  first run on a machine), interleaved, ``--repeats`` times: medians, min and max;
- **steady state** in this process, sequences per second at batch 1 and at batch 1024:
  ``InferenceSession.run`` against what ``rnnfc predict`` does per chunk (the model's
  scaling, then its compiled probabilities function), each timed as the median of
  ``--repeats`` rounds after a warm-up call.

Both use every core (onnxruntime's default thread pool; XLA:CPU's). Run by hand on a quiet
machine from the repository root, in an environment with ``rnnfc[onnx]`` and onnxruntime::

    python benchmarks/export.py               # 7 repeats, about 3 minutes on 2 cores
    python benchmarks/export.py --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cli_latency import _rnnfc_executable, _run, _slice_npz
from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
FRESH_SEQUENCES = 100
STEADY_BATCHES = (1, 1024)

# What a service with nothing but numpy and onnxruntime does to label a file.
SERVE = """
import json, sys
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1])
labels = json.loads(session.get_modelmeta().custom_metadata_map["labels"])
data = np.load(sys.argv[2])
feeds = {"inputs": data["X"].astype(np.float32), "lengths": data["lengths"].astype(np.int32)}
proba = session.run(None, feeds)[0]
print("\\n".join(labels[i] for i in proba.argmax(axis=1)))
"""


def fresh_processes(rnnfc: str, model: Path, artifact: Path, work: Path, repeats: int, say):
    """Wall seconds of fresh processes labelling 100 sequences, one list per way."""
    data = work / "predict100.npz"
    _slice_npz(SAMPLE / "motion_test.npz", data, FRESH_SEQUENCES, seed=0)
    serve = work / "serve.py"
    serve.write_text(SERVE)
    cache = work / "cache"
    predict = [rnnfc, "predict", str(model), str(data)]
    _run(predict, cache)  # fills the compile cache: the warm state measured below
    ways = {
        "onnxruntime, fresh process": [sys.executable, str(serve), str(artifact), str(data)],
        "rnnfc predict, warm cache": predict,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(repeats):
        for name, command in ways.items():
            times[name].append(_run(command, cache))
        say(f"fresh processes, repeat {r + 1}/{repeats}: " + ", ".join(
            f"{t[-1]:.2f} s" for t in times.values()
        ))  # fmt: skip
    return times


def steady_state(model: Path, artifact: Path, repeats: int) -> dict[str, dict[int, float]]:
    """Sequences per second of each way at each batch size (median of ``repeats``)."""
    import onnxruntime

    from rnnfc_cli import api, preprocessing

    with np.load(SAMPLE / "motion_test.npz") as data:
        inputs, lengths = data["X"].astype(np.float32), data["lengths"].astype(np.int32)
    session = onnxruntime.InferenceSession(str(artifact))
    files, proba, _ = api._open_model(model)

    def onnx_way(x, n):
        return session.run(None, {"inputs": x, "lengths": n})[0]

    def rnnfc_way(x, n):
        return proba(preprocessing.scale_block(files.preprocessing, x, n), n, len(n))

    rates: dict[str, dict[int, float]] = {"onnxruntime": {}, "rnnfc": {}}
    for batch in STEADY_BATCHES:
        rows = np.arange(batch) % len(inputs)
        x, n = inputs[rows], lengths[rows]
        calls = max(1, 256 // batch)  # enough work per round to time
        for name, way in (("onnxruntime", onnx_way), ("rnnfc", rnnfc_way)):
            way(x, n)  # warm-up: compiles, allocates
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                for _ in range(calls):
                    way(x, n)
                seconds.append(time.perf_counter() - started)
            rates[name][batch] = batch * calls / statistics.median(seconds)
    onnx_proba, rnnfc_proba = onnx_way(inputs, lengths), rnnfc_way(inputs, lengths)
    difference = float(np.abs(onnx_proba - rnnfc_proba).max())
    rates["max |difference| of probabilities"] = {0: difference}
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds of each case (7)")
    args = parser.parse_args(argv)

    def say(text: str = "") -> None:
        print(text, flush=True)

    rnnfc = _rnnfc_executable()
    names = ("rnnfc", "jax", "onnx", "onnxruntime")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)
    say(f"cpu: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}")
    say(versions)
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="rnnfc-export-bench-") as work:
        work = Path(work)
        model, artifact = work / "model", work / "model.onnx"
        train = [rnnfc, "train", str(SAMPLE / "motion_train.csv"), "-m", str(model)]
        took = _run([*train, "--epochs", "2", "--quiet"], work / "cache")
        say(f"setup: trained a default model (2 epochs) in {took:.1f} s")
        export = [rnnfc, "export", str(model), "-o", str(artifact), "--quiet"]
        subprocess.run(export, check=True, capture_output=True)
        say(f"exported {artifact.stat().st_size / 1e6:.2f} MB of ONNX")
        fresh = fresh_processes(rnnfc, model, artifact, work, args.repeats, say)
        rates = steady_state(model, artifact, args.repeats)
    say(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    say()
    say(f"{'label 100 sequences, fresh process':<36} {'median s':>9} {'min':>6} {'max':>6}")
    for name, values in fresh.items():
        say(f"{name:<36} {statistics.median(values):>9.2f} {min(values):>6.2f} {max(values):>6.2f}")
    ratio = statistics.median(fresh["rnnfc predict, warm cache"]) / statistics.median(
        fresh["onnxruntime, fresh process"]
    )
    say(f"onnxruntime is {ratio:.1f}x faster from a fresh process")
    say()
    say(f"{'steady state, sequences/s':<26} {'onnxruntime':>12} {'rnnfc':>10} {'ratio':>7}")
    for batch in STEADY_BATCHES:
        onnx_rate, rnnfc_rate = rates["onnxruntime"][batch], rates["rnnfc"][batch]
        say(
            f"{f'batch {batch}':<26} {onnx_rate:>12,.0f} {rnnfc_rate:>10,.0f} "
            f"{onnx_rate / rnnfc_rate:>7.2f}"
        )
    difference = rates["max |difference| of probabilities"][0]
    say(f"largest difference between the two ways' probabilities: {difference:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
