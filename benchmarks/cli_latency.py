"""Wall time of fresh ``rnnfc`` processes, against the floor of importing JAX and Flax.

Each case starts a new process (``subprocess.run``), ``--repeats`` times, and reports the
median, min and max wall time and the median's ratio to the floor
``python -c "import jax, flax.linen"`` measured in the same run. The cases run one after
another within each repeat (floor, help, predict cold, predict warm, train cold, train
warm), so slow drift in outside load hits them alike:

- ``rnnfc --help``;
- ``rnnfc predict MODEL data.npz`` on 100 sequences (a slice of
  ``sample_data/motion_test.npz``), first with an empty compile cache (``RNNFC_CACHE_DIR``
  a fresh directory), then again with that now warm cache;
- ``rnnfc train small.npz --epochs 1 --quiet`` on 64 sequences of
  ``sample_data/motion_train.npz``, with an empty and then a warm compile cache. This is the
  whole run (start-up, reading, compiling, one epoch of 2 steps, validation, checkpoint), an
  upper bound on the time to the first optimizer step: the CLI prints nothing earlier.

The model that ``predict`` loads is trained once beforehand on
``sample_data/motion_train.csv`` (``--epochs 2 --hidden 32``). Everything lives in a
temporary directory that is removed at the end.

Run by hand on a quiet machine, from the repository root in an environment where
``rnnfc`` is installed::

    python benchmarks/cli_latency.py                 # 5 repeats, 2-3 minutes on 2 cores
    python benchmarks/cli_latency.py --repeats 1     # smoke test
    python benchmarks/cli_latency.py --json          # table on stderr, JSON on stdout
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
PREDICT_SEQUENCES = 100
TRAIN_SEQUENCES = 64
FLOOR = "floor"


def _rnnfc_executable() -> str:
    """The ``rnnfc`` script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "rnnfc"
    if beside.exists():
        return str(beside)
    found = shutil.which("rnnfc")
    if found is None:
        sys.exit("cli_latency: no rnnfc executable beside this python or on PATH")
    return found


def _run(command: list[str], cache: Path | None = None) -> float:
    """Seconds a fresh process takes; exits with its stderr if it fails."""
    env = dict(os.environ)
    if cache is not None:
        env["RNNFC_CACHE_DIR"] = str(cache)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"cli_latency: {' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return elapsed


def _slice_npz(source: Path, target: Path, count: int, seed: int) -> None:
    """Write ``count`` sequences of ``source`` (picked at random, in order) to ``target``."""
    with np.load(source, allow_pickle=False) as data:
        arrays = {key: data[key] for key in ("X", "y", "lengths")}
    rows = np.sort(np.random.default_rng(seed).choice(len(arrays["y"]), count, replace=False))
    np.savez(target, **{key: value[rows] for key, value in arrays.items()})


def measure(rnnfc: str, work: Path, repeats: int, say) -> dict[str, list[float]]:
    """Every case's wall times, one per repeat."""
    model = work / "model"
    predict_data = work / "predict100.npz"
    train_data = work / "train64.npz"
    _slice_npz(SAMPLE / "motion_test.npz", predict_data, PREDICT_SEQUENCES, seed=0)
    _slice_npz(SAMPLE / "motion_train.npz", train_data, TRAIN_SEQUENCES, seed=0)
    setup = [rnnfc, "train", str(SAMPLE / "motion_train.csv"), "--model-dir", str(model)]
    setup_s = _run([*setup, "--epochs", "2", "--hidden", "32", "--quiet"], work / "setup-cache")
    say(f"setup: trained the predict model in {setup_s:.1f} s")

    times: dict[str, list[float]] = {}
    for r in range(repeats):
        predict_cache, train_cache = work / f"predict-cache-{r}", work / f"train-cache-{r}"
        predict = [rnnfc, "predict", str(model), str(predict_data)]

        def train(name: str, r: int = r) -> list[str]:
            target = work / f"trained-{name}-{r}"
            return [rnnfc, "train", str(train_data), "-m", str(target), "--epochs", "1", "-q"]

        cases = {
            FLOOR: ([sys.executable, "-c", "import jax, flax.linen"], None),
            "rnnfc --help": ([rnnfc, "--help"], None),
            "predict 100, cold cache": (predict, predict_cache),
            "predict 100, warm cache": (predict, predict_cache),
            "train 64 x 1 epoch, cold cache": (train("cold"), train_cache),
            "train 64 x 1 epoch, warm cache": (train("warm"), train_cache),
        }
        for name, (command, cache) in cases.items():
            times.setdefault(name, []).append(_run(command, cache))
        say(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{t[-1]:.2f}" for t in times.values()))
    return times


def render(times: dict[str, list[float]]) -> str:
    """The results as a fixed-width table."""
    floor = statistics.median(times[FLOOR])
    head = f"{'case':<34} {'median s':>9} {'min':>7} {'max':>7} {'x floor':>8}"
    lines = [head, "-" * len(head)]
    for name, values in times.items():
        median = statistics.median(values)
        label = 'python -c "import jax, flax.linen"' if name == FLOOR else name
        lines.append(
            f"{label:<34} {median:>9.2f} {min(values):>7.2f} {max(values):>7.2f} "
            f"{median / floor:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each case (5)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    report = sys.stderr if args.json else sys.stdout

    def say(text: str = "") -> None:
        print(text, file=report, flush=True)

    rnnfc = _rnnfc_executable()
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("rnnfc", "jax", "flax")
    )
    say(f"cpu: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}")
    say(f"{versions}; rnnfc at {rnnfc}")
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="rnnfc-cli-latency-") as work:
        times = measure(rnnfc, Path(work), args.repeats, say)
    say(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    say()
    say(render(times))
    say(
        "\ntrain is the whole process (no output comes earlier), so it bounds the time to the "
        "first optimizer step from above."
    )
    if args.json:
        floor = statistics.median(times[FLOOR])
        print(
            json.dumps(
                {
                    "repeats": args.repeats,
                    "median_s": {k: statistics.median(v) for k, v in times.items()},
                    "ratio_to_floor": {
                        k: statistics.median(v) / floor for k, v in times.items() if k != FLOOR
                    },
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
