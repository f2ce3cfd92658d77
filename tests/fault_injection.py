"""Kill ``rnnfc train`` with SIGKILL at random moments, resume it each time, and check that
nothing is ever lost.

The run replaces an existing model (``--force``) and takes a snapshot every epoch, so kills
land while it starts, trains, saves a snapshot or restores one. After every kill:

- the model directory that was there before still loads and predicts exactly as before;
- the interrupted run's latest snapshot, when there is one, restores;
- the next run resumes it (``--resume``), or starts over when nothing was saved yet.

Finally the run is let finish, and its parameters must equal, bit for bit, those of the
same training never interrupted.

    python tests/fault_injection.py --kills 25   # the README's figure (about 5 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data" / "motion_train.csv"
TRAIN_FLAGS = ["--patience", "1000", "--min-steps", "0", "--checkpoint-every", "0"]


def _train(data: Path, model_dir: Path, epochs: int, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "rnnfc_cli", "train", str(data), "-m", str(model_dir)]
    return subprocess.Popen(
        [*command, *TRAIN_FLAGS, "--epochs", str(epochs), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def _finish(process: subprocess.Popen) -> None:
    err = process.stderr.read()
    if process.wait() != 0:
        raise SystemExit(f"training failed ({process.returncode}): {err[-2000:]}")


def _params(model_dir: Path):
    from flax import serialization

    return serialization.msgpack_restore((model_dir / "params.msgpack").read_bytes())


def _same(a, b) -> bool:
    import jax

    return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def _kill_at_random(process: subprocess.Popen, rng: random.Random) -> str:
    """SIGKILL the process: half the time at a random moment after it starts, half the
    time a random moment after its first finished epoch. Returns when it died."""
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.0, 4.0))
        moment = "any"
    else:
        for line in process.stderr:
            if line.startswith("epoch "):
                break
        time.sleep(rng.uniform(0.0, 1.5))
        moment = "training"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return moment


def _unfinished_saves(partial: Path) -> set[str]:
    """Orbax's temporary directories: a save that was killed before it finished."""
    from rnnfc_cli import checkpoint

    state_dir = partial / checkpoint.TRAIN_STATE_DIR
    return {p.name for p in state_dir.iterdir() if "tmp" in p.name} if state_dir.is_dir() else set()


def run(kills: int, seed: int, data: Path, workdir: Path, epochs: int = 40) -> dict:
    """Returns the counts of kills and where they landed. The run must be long enough
    (``epochs``) to take every kill; a run that finishes first ends the injection early."""
    from rnnfc_cli import api, checkpoint

    rng = random.Random(seed)
    reference, model_dir = workdir / "reference", workdir / "model"
    _finish(_train(data, reference, epochs))
    _finish(_train(data, model_dir, 2))  # the model a user already has
    before = api.predict(model_dir, str(data)).proba
    partial = checkpoint.staging_dir(model_dir)
    counts = {"kills": 0, "in_save": 0, "nothing_saved_yet": 0, "resumed": 0}
    for _ in range(kills):
        saved = checkpoint.read_snapshot(model_dir) is not None
        counts["resumed"] += saved
        unfinished = _unfinished_saves(partial)
        process = _train(data, model_dir, epochs, "--resume" if saved else "--force")
        _kill_at_random(process, rng)
        if process.returncode == 0:  # it finished before the kill: nothing left to kill
            break
        counts["kills"] += 1
        counts["in_save"] += bool(_unfinished_saves(partial) - unfinished)
        if not np.array_equal(api.predict(model_dir, str(data)).proba, before):
            raise SystemExit("the existing model changed")
        if checkpoint.read_snapshot(model_dir) is None:
            counts["nothing_saved_yet"] += 1
    saved = checkpoint.read_snapshot(model_dir) is not None
    _finish(_train(data, model_dir, epochs, "--resume" if saved else "--force"))
    if partial.exists():
        raise SystemExit(f"{partial} left behind")
    return {**counts, "identical_to_uninterrupted": _same(_params(reference), _params(model_dir))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rnnfc-faults-"))
    try:
        result = run(args.kills, args.seed, args.data, workdir, args.epochs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>28}: {value}")
    if not result["identical_to_uninterrupted"]:
        raise SystemExit("the resumed run differs from the uninterrupted one")


if __name__ == "__main__":
    main()
