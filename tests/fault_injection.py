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
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data" / "motion_train.csv"
TRAIN_FLAGS = ["--patience", "1000", "--min-steps", "0", "--checkpoint-every", "0"]
# A small conv front end and recurrent layer: kills and resumes are what is tested, and
# start-up compiles dominate each of the runs.
TRAIN_FLAGS += ["--conv", "8:5,8:3", "--hidden", "8", "--dense", "8", "--refit", "off"]


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


def _epoch_of(line: str) -> int:
    """The epoch a progress line reports ("epoch 3/60  loss ..."), else 0."""
    if not line.startswith("epoch "):
        return 0
    return int(line.split()[1].split("/")[0])


class _Watch:
    """Reads a training's stderr in a thread, so that the epochs it has finished can be
    waited for without a clock: a kill then lands at a point the run really reached."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.last_epoch, self.ended = 0, False
        threading.Thread(target=self._read, args=(process.stderr,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_epoch(self, epoch: int, timeout: float | None = None) -> bool:
        """Wait until the run has finished ``epoch`` or a later one: True; False when it
        ended, or ``timeout`` seconds passed, first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.last_epoch < epoch and not self.ended:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                self.ended = True
            else:
                self.last_epoch = max(self.last_epoch, _epoch_of(line))
        return self.last_epoch >= epoch


MOMENTS = ("start-up", "after an epoch", "in a save")


def _kill(
    process: subprocess.Popen, moment: str, target: int, partial: Path, rng: random.Random
) -> None:
    """SIGKILL the process at ``moment``:

    - start-up: a random moment before its first epoch ends (at the end, at the latest);
    - after an epoch: as soon as it has finished epoch ``target`` (or a later one);
    - in a save: while it writes the first snapshot it starts after epoch ``target``
      (after three more epochs without one seen, at once).

    Every moment is one the run reaches, and ``target`` leaves it epochs to go: the kill
    interrupts it on any machine, however fast. A run that ended first is an error.
    """
    watch = _Watch(process)
    if moment == "start-up":
        watch.wait_for_epoch(1, timeout=rng.uniform(0.0, 3.0))
    else:
        watch.wait_for_epoch(target)
    if moment == "in a save":
        before = _unfinished_saves(partial)
        while not watch.wait_for_epoch(target + 3, timeout=0.002) and not watch.ended:
            if _unfinished_saves(partial) - before:
                break
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise SystemExit(
            f"the run ended ({process.returncode}) before the kill {moment} (epoch {target})"
        )


def _unfinished_saves(partial: Path) -> set[str]:
    """Orbax's temporary directories: a save that was killed before it finished."""
    from rnnfc_cli import staging

    state_dir = partial / staging.TRAIN_STATE_DIR
    return {p.name for p in state_dir.iterdir() if "tmp" in p.name} if state_dir.is_dir() else set()


def run(
    kills: int, seed: int, data: Path, workdir: Path, epochs: int = 40, existing: Path | None = None
) -> dict:
    """Returns the counts of kills and where they landed. Kill ``i`` of ``kills`` comes
    after an epoch drawn from the ``i``-th of ``kills + 1`` equal slices of the run, so
    every kill finds the run still going; a slice must be at least 8 epochs. The model
    that the run replaces is a copy of ``existing``, else a 2-epoch one trained first."""
    from rnnfc_cli import api, snapshots, staging

    slice_epochs = epochs // (kills + 1)
    if slice_epochs < 8:
        raise SystemExit(f"--epochs {epochs}: too few for {kills} kills (at least 8 each)")
    rng = random.Random(seed)
    reference, model_dir = workdir / "reference", workdir / "model"
    # Uninterrupted and without snapshots: they must not change the training either.
    _finish(_train(data, reference, epochs, "--checkpoint-every", "3600"))
    if existing is None:
        _finish(_train(data, model_dir, 2))  # the model a user already has
    else:
        shutil.copytree(existing, model_dir)
    before = api.predict(model_dir, str(data)).proba
    partial = staging.staging_dir(model_dir)
    counts = {"kills": 0, "in_save": 0, "nothing_saved_yet": 0, "resumed": 0}
    counts.update(dict.fromkeys(MOMENTS, 0))
    for i in range(kills):
        saved = snapshots.read_snapshot(model_dir) is not None
        counts["resumed"] += saved
        unfinished = _unfinished_saves(partial)
        process = _train(data, model_dir, epochs, "--resume" if saved else "--force")
        moment = rng.choice(MOMENTS)
        target = rng.randint(i * slice_epochs + 1, (i + 1) * slice_epochs)
        _kill(process, moment, target, partial, rng)
        counts["kills"] += 1
        counts[moment] += 1
        counts["in_save"] += bool(_unfinished_saves(partial) - unfinished)
        if not np.array_equal(api.predict(model_dir, str(data)).proba, before):
            raise SystemExit("the existing model changed")
        if snapshots.read_snapshot(model_dir) is None:
            counts["nothing_saved_yet"] += 1
    saved = snapshots.read_snapshot(model_dir) is not None
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
