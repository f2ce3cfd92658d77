"""Never lose work: snapshots of the full train state, bit-identical resume, interruption,
refusals that protect a saved run, and a failed save that keeps the last snapshot."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY_MODEL

from rnnfc_cli import api, checkpoint, snapshots, staging
from rnnfc_cli import train as rnnfc_train
from rnnfc_cli.callbacks import Callback
from rnnfc_cli.config import TrainConfig
from rnnfc_cli.errors import ModelDirError, SaveFailedError, TrainingInterruptedError

EPOCHS = 5


def _request(tiny_data, model_dir: Path, **kwargs) -> api.TrainRequest:
    # No refit: it runs after the validation run and keeps no snapshots of its own.
    settings = {
        "epochs": EPOCHS,
        "batch_size": 8,
        "min_steps": 0,
        "val_split": 0.25,
        "refit": "off",
    }
    settings.update(kwargs.pop("train", {}))
    return api.TrainRequest(
        data=str(tiny_data["train_npz"]),
        model_dir=model_dir,
        model_options={**TINY_MODEL, "dropout": 0.2},  # dropout: the RNG must resume too
        train=TrainConfig(patience=100, ensemble=2, **settings),
        **kwargs,
    )


class _StopAt(Callback):
    """Sets the stop event (as a Ctrl-C would) at one step of one epoch."""

    def __init__(self, stop: threading.Event, epoch: int, step_in_epoch: int):
        self.stop, self.at = stop, (epoch, step_in_epoch)

    def on_step(self, epoch, step_in_epoch):
        if (epoch, step_in_epoch) == self.at:
            self.stop.set()


def _params(model_dir: Path):
    from flax import serialization

    return serialization.msgpack_restore(
        (model_dir / checkpoint.INFERENCE_PARAMS_FILE).read_bytes()
    )


def _metric_epochs(model_dir: Path) -> list[int]:
    lines = (model_dir / checkpoint.METRICS_FILE).read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory) -> tuple[Path, dict]:
    model_dir = tmp_path_factory.mktemp("whole") / "m"
    return model_dir, api.train_model(_request(tiny_data, model_dir))


@pytest.mark.xla_default
@pytest.mark.parametrize(
    ("epoch", "step_in_epoch", "every"),
    [(1, 1, 5.0), (3, 2, 5.0), (2, 3, 0.0)],
    ids=["first-step", "mid-epoch", "last-step-of-epoch"],
)
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(
    tiny_data, tmp_path, uninterrupted, epoch, step_in_epoch, every
):
    whole_dir, whole = uninterrupted
    model_dir = tmp_path / "m"
    stop = threading.Event()
    with pytest.raises(TrainingInterruptedError) as caught:
        api.train_model(
            _request(tiny_data, model_dir, stop=stop, checkpoint_every=every),
            _StopAt(stop, epoch, step_in_epoch),
        )
    assert caught.value.saved and caught.value.epoch == epoch
    assert not model_dir.exists() and staging.staging_dir(model_dir).is_dir()

    summary = api.train_model(_request(tiny_data, model_dir, resume=True))
    assert summary["resumed_from_epoch"] == epoch - 1
    assert summary["steps"] == whole["steps"] and summary["best_epoch"] == whole["best_epoch"]
    same = jax.tree.map(np.array_equal, _params(whole_dir), _params(model_dir))
    assert all(jax.tree.leaves(same))
    assert _metric_epochs(model_dir) == list(range(1, EPOCHS + 1))
    assert not staging.staging_dir(model_dir).exists()
    assert not (model_dir / staging.TRAIN_STATE_DIR).exists()


def test_a_saved_run_is_neither_overwritten_nor_resumed_by_accident(
    tiny_data, tmp_path, monkeypatch
):
    model_dir = tmp_path / "m"
    stop = threading.Event()
    with pytest.raises(TrainingInterruptedError):
        api.train_model(_request(tiny_data, model_dir, stop=stop), _StopAt(stop, 2, 1))
    with pytest.raises(ModelDirError, match=r"interrupted run is saved.*--resume.*--force"):
        api.train_model(_request(tiny_data, model_dir))
    with pytest.raises(ModelDirError, match="data or settings differ"):
        api.train_model(_request(tiny_data, model_dir, resume=True, train={"lr": 3e-3}))
    with monkeypatch.context() as patched:  # snapshots of another train-state layout
        patched.setattr(rnnfc_train, "STATE_LAYOUT", rnnfc_train.STATE_LAYOUT + 1)
        with pytest.raises(ModelDirError, match="another version of rnnfc saved it"):
            api.train_model(_request(tiny_data, model_dir, resume=True))
    with pytest.raises(ModelDirError, match="data or settings differ"):
        other = {"data": str(tiny_data["train_wide"])}
        api.train_model(
            api.TrainRequest(**{**vars(_request(tiny_data, model_dir)), **other, "resume": True})
        )
    assert staging.staging_dir(model_dir).is_dir()  # still resumable after refusals
    api.train_model(_request(tiny_data, model_dir, force=True))  # --force starts over
    assert model_dir.is_dir() and not staging.staging_dir(model_dir).exists()
    with pytest.raises(ModelDirError, match="no interrupted run"):
        api.train_model(_request(tiny_data, tmp_path / "other", resume=True))


def test_an_interruption_before_the_first_step_saves_nothing(tiny_data, tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingInterruptedError) as caught:
        api.train_model(_request(tiny_data, tmp_path / "m", stop=stop))
    assert not caught.value.saved
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_saving_keeps_the_last_snapshot(tiny_data, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    saves = []
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        saves.append(step)
        if len(saves) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    model_dir = tmp_path / "m"
    with pytest.raises(SaveFailedError, match=r"No space left on device.*step \d+.*intact"):
        api.train_model(_request(tiny_data, model_dir, checkpoint_every=0.0))
    kept = staging.saved_steps(staging.staging_dir(model_dir) / staging.TRAIN_STATE_DIR)
    assert kept == [saves[1]]
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    summary = api.train_model(_request(tiny_data, model_dir, resume=True))
    assert summary["resumed_from_epoch"] == 2


_FILL_THE_DISK = """
import errno, sys
from pathlib import Path
from rnnfc_cli import api
from rnnfc_cli.config import TrainConfig
from rnnfc_cli.errors import SaveFailedError
from rnnfc_cli.callbacks import Callback

mount, data = Path(sys.argv[1]), sys.argv[2]
filler = mount / "filler"

class FillAfterFirstSnapshot(Callback):
    def on_snapshot(self, snapshot):
        if filler.exists():
            return
        # Unbuffered: a buffered writer would try the rejected bytes again on close.
        with filler.open("wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(bytes(1 << 16))
            except OSError as err:
                assert err.errno == errno.ENOSPC

def request(**kwargs):
    return api.TrainRequest(
        data=data, model_dir=mount / "m", model_options={"hidden": 8, "dense": (8,)},
        train=TrainConfig(epochs=6, batch_size=8, min_steps=0, val_split=0.25, patience=100,
                          refit="off"),
        checkpoint_every=0.0, **kwargs)

try:
    api.train_model(request(), FillAfterFirstSnapshot())
except SaveFailedError as err:
    print("FAILED", err)
filler.unlink()
print("RESUMED", api.train_model(request(resume=True))["resumed_from_epoch"])
"""


def _can_mount_tmpfs() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and mount (root)")
def test_a_really_full_disk_is_reported_and_the_run_resumes_after_space_is_freed(
    tiny_data, tmp_path
):
    import subprocess
    import sys

    mount = tmp_path / "small_disk"
    mount.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(_FILL_THE_DISK)
    command = (
        f"mount -t tmpfs -o size=4m tmpfs {mount} && "
        f"{sys.executable} {script} {mount} {tiny_data['train_npz']}"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    failed, resumed = result.stdout.splitlines()
    assert "No space left on device" in failed and "intact" in failed, failed
    assert resumed == "RESUMED 1"


def test_ctrl_c_saves_says_how_to_resume_and_exits_130(tiny_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    model_dir = tmp_path / "m"
    command = [sys.executable, "-m", "rnnfc_cli", "train", str(tiny_data["train_npz"])]
    where = ["-m", str(model_dir)]
    flags = [
        "--hidden",
        "8",
        "--dense",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "20",
        "--refit",
        "off",
        "--conv",
        "none",
    ]
    flags += ["--patience", "20", "--checkpoint-every", "60"]
    env = {**os.environ, "NO_COLOR": "1"}
    process = subprocess.Popen(
        [*command, *where, *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in process.stderr:  # one plain line per epoch off a terminal
        if line.startswith("epoch 3/"):
            process.send_signal(signal.SIGINT)
            break
    err = process.stderr.read()
    assert process.wait(timeout=60) == 130, err
    last = err.strip().splitlines()[-1]
    assert "the run is saved; continue it with: rnnfc train" in last and "--resume" in last
    assert "Traceback" not in err

    changed = subprocess.run(
        [*command, *where, "--resume", "--lr", "0.5"], capture_output=True, text=True, env=env
    )
    assert changed.returncode == 2
    assert "--lr 0.5: --resume continues a run made with 0.001" in changed.stderr

    resumed = subprocess.run(
        [*command, *where, "--resume", "--json", "-q"], capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert 3 <= summary["resumed_from_epoch"] < 20 and summary["epochs_run"] == 20
    assert _metric_epochs(model_dir) == list(range(1, 21))


class _SignalAt(Callback):
    """Sends this process ``signals`` once, at one step of one epoch. ``raise_signal``
    runs the Python handler before it returns, so each signal is handled in turn."""

    def __init__(self, at: tuple[int, int], signals: tuple[int, ...]):
        self.at, self.signals = at, signals

    def on_step(self, epoch, step_in_epoch):
        import signal

        if (epoch, step_in_epoch) == self.at:
            for number in self.signals:
                signal.raise_signal(number)


@pytest.fixture()
def signals_at(monkeypatch):
    """Have the CLI's training send signals to its own process at a given step, with
    SIGINT and SIGTERM handled as in a fresh process (and a signal that reaches those
    handlers failing the test rather than ending the test process)."""
    import signal

    from rnnfc_cli.callbacks import CallbackList

    def unexpected(number, frame):
        del frame
        raise AssertionError(f"signal {number} reached the handler outside the CLI")

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, unexpected),
    }
    real = api.train_model

    def arrange(at: tuple[int, int], *numbers: int) -> None:
        def train_model(request, callbacks):
            monkeypatch.setattr(api, "train_model", real)  # once
            return real(request, CallbackList(callbacks, _SignalAt(at, numbers)))

        monkeypatch.setattr(api, "train_model", train_model)

    yield arrange
    for number, handler in previous.items():
        signal.signal(number, handler)


CLI_FLAGS = ["--hidden", "8", "--dense", "8", "--batch-size", "8", "--epochs", "3", "--conv", "4:3"]
CLI_FLAGS += ["--patience", "100", "--min-steps", "0", "--checkpoint-every", "60"]


def test_sigterm_saves_and_one_resume_command_line_serves_every_attempt(
    tiny_data, tmp_path, signals_at, capsys
):
    """As a scheduler requeues a job: the same ``--resume`` command line starts afresh when
    nothing is saved, and continues a run that was stopped."""
    import shlex
    import signal

    from rnnfc_cli.cli import main

    model_dir = tmp_path / "m"
    argv = ["train", str(tiny_data["train_npz"]), "-m", str(model_dir), *CLI_FLAGS, "--resume"]
    signals_at((2, 1), signal.SIGTERM)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "--resume: nothing saved" in err and "starting a new run" in err
    assert "stopping after this step" in err and "Traceback" not in err
    saved = snapshots.read_snapshot(model_dir)
    assert saved is not None and saved[1]["epoch"] == 2 and saved[1]["batches_done"] == 1
    command = shlex.split(err.strip().splitlines()[-1].split("continue it with: ")[1])
    assert command[:2] == ["rnnfc", "train"] and command[-1] == "--resume"
    assert main(argv) == 0, capsys.readouterr().err
    assert "nothing saved" not in capsys.readouterr().err
    summary = json.loads((model_dir / checkpoint.SUMMARY_FILE).read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 3
    assert _metric_epochs(model_dir) == [1, 2, 3]
    assert not staging.staging_dir(model_dir).exists()


def test_resume_with_nothing_saved_trains_afresh_and_says_so(tiny_data, tmp_path, capsys):
    from rnnfc_cli.cli import main

    argv = ["train", str(tiny_data["train_npz"]), "-m", str(tmp_path / "m"), *CLI_FLAGS]
    assert main([*argv, "--resume", "--json", "--epochs", "1"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["resumed_from_epoch"] is None
    assert [line for line in err.splitlines() if "--resume" in line] == [
        f"rnnfc train: --resume: nothing saved in {staging.staging_dir(tmp_path / 'm')} "
        "to continue; starting a new run"
    ]


def test_a_second_ctrl_c_quits_at_once(tiny_data, tmp_path, signals_at, capsys):
    import signal

    from rnnfc_cli.cli import main

    signals_at((1, 2), signal.SIGINT, signal.SIGINT)
    argv = ["train", str(tiny_data["train_npz"]), "-m", str(tmp_path / "m"), *CLI_FLAGS]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("rnnfc train: stopping after this step")
    # No snapshot after the step, as a single Ctrl-C takes: no model, staging or lock left.
    assert list(tmp_path.iterdir()) == []


def test_sigkill_at_random_moments_never_loses_work(tiny_data, trained_model):
    """A short run of ``tests/fault_injection.py`` (the README quotes a long one): seed 5
    kills while a snapshot is being written after epoch 5 or later, and the next run
    resumes from the last whole one; the run must still be going when it is killed."""
    import tempfile

    from fault_injection import run

    with tempfile.TemporaryDirectory() as workdir:
        result = run(
            kills=1,
            seed=5,
            data=tiny_data["train_npz"],
            workdir=Path(workdir),
            epochs=16,
            existing=trained_model,
        )
    assert result["kills"] == 1 and result["in a save"] == 1, result
    assert result["in_save"] == 1 and result["nothing_saved_yet"] == 0, result
    assert result["identical_to_uninterrupted"], result
