"""What the README promises of the command line, each through it: a validation file, the
tutorial's own column names, bf16 precision and a failed save."""

from __future__ import annotations

import csv
import errno
import io
import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from rnnfc_cli import api, checkpoint
from rnnfc_cli.cli import app, main

runner = CliRunner()
SMALL = ["--hidden", "8", "--dense", "8", "--batch-size", "8", "--min-steps", "0", "--refit", "off"]
SMALL += ["--conv", "4:3"]  # one small block compiles faster than the default three
TINY = [*SMALL, "--epochs", "1"]
# The README tutorial's flags, for columns named as a logging system might name them.
RENAMED = {"id": "utterance", "time": "frame", "label": "speaker"}
FLAGS = ["--id-col", "utterance", "--time-col", "frame", "--label-col", "speaker"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_a_validation_file_is_the_validation_set(tiny_data, tmp_path):
    model_dir = tmp_path / "m"
    result = invoke(
        "train", tiny_data["train_long"], "-m", model_dir, "--val", tiny_data["test_long"],
        *TINY, "--json", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["val_data"]["source"] == str(tiny_data["test_long"])
    assert summary["val_data"]["sequences"] == 12  # the whole file
    assert summary["train_data"]["sequences"] == 32  # none of it held out
    validation = json.loads((model_dir / checkpoint.VALIDATION_FILE).read_text())
    assert validation["n"] == 12
    evaluated = invoke("eval", model_dir, tiny_data["test_long"], "--json")
    assert json.loads(evaluated.stdout)["accuracy"] == validation["accuracy"]


def _renamed_and_shuffled_in_time(source: Path, target: Path, seed: int) -> Path:
    """The long CSV ``source`` with the id, time and label columns renamed, and the rows
    of each sequence in a random order (so only the time column orders them)."""
    rows = list(csv.reader(source.open(newline="")))
    header, body = rows[0], rows[1:]
    rng = np.random.default_rng(seed)
    by_id: dict[str, list[list[str]]] = {}
    for row in body:
        by_id.setdefault(row[0], []).append(row)
    shuffled = [row for group in by_id.values() for row in rng.permutation(group).tolist()]
    assert shuffled != body
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([RENAMED.get(name, name) for name in header])
        writer.writerows(shuffled)
    return target


def test_the_tutorials_column_flags_read_the_same_data(tiny_data, tmp_path):
    train = _renamed_and_shuffled_in_time(tiny_data["train_long"], tmp_path / "train.csv", 0)
    test = _renamed_and_shuffled_in_time(tiny_data["test_long"], tmp_path / "test.csv", 1)
    plain, renamed = tmp_path / "plain", tmp_path / "renamed"
    result = invoke("train", tiny_data["train_long"], "-m", plain, *TINY, "-q")
    assert result.exit_code == 0, result.stderr
    result = invoke("train", train, "-m", renamed, *TINY, *FLAGS, "-q")
    assert result.exit_code == 0, result.stderr
    params = checkpoint.INFERENCE_PARAMS_FILE
    assert (renamed / params).read_bytes() == (plain / params).read_bytes()

    expected = invoke("predict", plain, tiny_data["test_long"], "--proba")
    predicted = invoke("predict", plain, test, "--proba", *FLAGS)
    assert predicted.exit_code == 0, predicted.stderr
    assert predicted.stdout == expected.stdout
    expected = invoke("eval", plain, tiny_data["test_long"], "--json")
    evaluated = invoke("eval", plain, test, "--json", *FLAGS)
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout) == json.loads(expected.stdout)


def _probabilities(stdout: str) -> np.ndarray:
    rows = list(csv.DictReader(io.StringIO(stdout)))
    return np.array([[float(v) for k, v in row.items() if k.startswith("prob_")] for row in rows])


def test_bf16_is_saved_shown_and_predicts_close_to_float32(tiny_data, tmp_path):
    model_dir = tmp_path / "bf16"
    result = invoke("train", tiny_data["train_long"], "-m", model_dir, *TINY, "--precision", "bf16")
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke("info", model_dir, "--json").stdout)
    assert info["model"]["precision"] == "bf16"
    half = invoke("predict", model_dir, tiny_data["test_long"], "--proba")
    assert half.exit_code == 0, half.stderr
    expected = api.predict(model_dir, str(tiny_data["test_long"]))
    np.testing.assert_allclose(_probabilities(half.stdout), expected.proba, atol=1e-6)
    # The same parameters with float32 products: close, but not the same numbers.
    full_dir = tmp_path / "float32"
    shutil.copytree(model_dir, full_dir)
    config = json.loads((full_dir / checkpoint.CONFIG_FILE).read_text())
    config["model"]["precision"] = "float32"
    (full_dir / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
    full = _probabilities(invoke("predict", full_dir, tiny_data["test_long"], "--proba").stdout)
    np.testing.assert_allclose(_probabilities(half.stdout), full, atol=2e-2)
    assert not np.array_equal(_probabilities(half.stdout), full)


def test_a_failed_save_is_one_line_and_exit_1(tiny_data, tmp_path, monkeypatch, capsys):
    import orbax.checkpoint as ocp

    saves = []
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        saves.append(step)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    model_dir = tmp_path / "m"
    argv = ["train", str(tiny_data["train_long"]), "-m", str(model_dir), *SMALL, "-q"]
    code = main([*argv, "--epochs", "3", "--checkpoint-every", "0"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"the snapshot of step {saves[0]} in" in err and "No space left on device" in err
    assert "free space, then add --resume" in err
    assert not model_dir.exists()
