"""The command line end to end: through Typer's runner, and once as real processes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_FLAGS
from typer.testing import CliRunner

from rnnfc_cli import api
from rnnfc_cli.cli import app, main
from rnnfc_cli.config import TrainConfig

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def test_train_json_summary_has_the_documented_keys(tiny_data, tmp_path):
    result = invoke("train", tiny_data["train_wide"], "-m", tmp_path / "m", *TINY_FLAGS, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in (
        "model_dir",
        "epochs_run",
        "best_epoch",
        "best_val_accuracy",
        "train_seconds",
        "params",
        "devices",
    ):
        assert key in summary
    assert summary["epochs_run"] == 2
    phases = summary["seconds"]
    assert list(phases) == ["read", "preprocess", "start", "train", "save"]  # no refit here
    assert all(value >= 0 for value in phases.values())
    assert phases["train"] >= summary["train_seconds"] - 0.05  # fit's own clock is inside
    metrics = (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]


def test_train_refuses_an_existing_model_dir_with_exit_2(tiny_data, trained_model):
    result = invoke("train", tiny_data["train_long"], "-m", trained_model, *TINY_FLAGS)
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "Traceback" not in result.stderr


def test_eval_json_matches_the_library_and_gates(tiny_data, trained_model):
    result = invoke("eval", trained_model, tiny_data["test_long"], "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    expected, labels = api.evaluate(trained_model, str(tiny_data["test_long"]))
    assert report == json.loads(json.dumps(expected.to_dict(labels)))
    assert report["labels"] == ["down", "up"]
    gate = invoke("eval", trained_model, tiny_data["test_long"], "--min-accuracy", "1.01")
    assert gate.exit_code == 2  # out of range is a usage error
    accuracy = report["accuracy"]
    passed = invoke("eval", trained_model, tiny_data["test_long"], "--min-accuracy", accuracy, "-q")
    assert passed.exit_code == 0
    if accuracy > 0:
        failed = invoke("eval", trained_model, tiny_data["test_long"], "--min-accuracy", 1.0, "-q")
        assert (failed.exit_code == 1) == (accuracy < 1.0)
        if accuracy < 1.0:
            assert "below --min-accuracy" in failed.stderr


def test_results_go_to_stdout_as_a_table_or_only_as_json(tiny_data, trained_model):
    """The result is on stdout, a table or (--json) JSON alone; stderr stays empty."""
    tables = invoke("eval", trained_model, tiny_data["test_long"])
    assert tables.exit_code == 0 and tables.stderr == ""
    assert "accuracy" in tables.stdout and "Confusion" in tables.stdout
    card = invoke("info", trained_model)
    assert card.exit_code == 0 and card.stderr == ""
    assert "lstm x 1 layer(s)" in card.stdout
    for command in (["eval", trained_model, tiny_data["test_long"]], ["info", trained_model]):
        result = invoke(*command, "--json")
        assert result.exit_code == 0 and result.stderr == ""
        assert isinstance(json.loads(result.stdout), dict)  # nothing but the JSON


def test_predict_csv_in_input_order_with_probabilities(tiny_data, trained_model):
    result = invoke("predict", trained_model, tiny_data["test_long"], "--proba")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["id", "label", "prob_down", "prob_up"]
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(12)]
    expected = api.predict(trained_model, str(tiny_data["test_long"]))
    assert [r["label"] for r in rows] == expected.labels
    probs = np.array([[float(r["prob_down"]), float(r["prob_up"])] for r in rows])
    np.testing.assert_allclose(probs, expected.proba, atol=1e-6)


def test_predict_jsonl_from_stdin_ignores_labels(tiny_data, trained_model):
    raw = tiny_data["test_long"].read_bytes()
    result = invoke("predict", trained_model, "-", "--format", "jsonl", "--proba", input=raw)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 12 and set(records[0]) == {"id", "label", "probs"}
    assert set(records[0]["probs"]) == {"down", "up"}
    assert abs(sum(records[0]["probs"].values()) - 1) < 1e-6


def test_predict_to_file(tiny_data, trained_model, tmp_path):
    out = tmp_path / "pred.csv"
    result = invoke("predict", trained_model, tiny_data["test_long"], "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert out.read_text().splitlines()[0] == "id,label"


def test_info_json(trained_model):
    result = invoke("info", trained_model, "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["labels"] == ["down", "up"]
    assert info["model"]["hidden"] == 8 and info["features"] == 2
    assert info["summary"]["params"] > 0


def test_help_and_version_do_not_import_jax_or_pyarrow():
    code = (
        "import sys; from rnnfc_cli.cli import main; "
        "assert main(['--version']) == 0; "
        "assert main(['train', '--help']) == 0; "
        "assert 'jax' not in sys.modules, 'jax imported'; "
        "assert 'pyarrow' not in sys.modules, 'pyarrow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_importing_the_package_leaves_the_environment_alone():
    code = (
        "import os; before = dict(os.environ); "
        "import rnnfc_cli, rnnfc_cli.api, rnnfc_cli.cli, rnnfc_cli.train; "
        "assert dict(os.environ) == before, 'environment changed'"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)


def test_train_help_groups_every_option_in_panels_in_order():
    text = invoke("train", "--help").stdout
    titles = [line.split("─ ")[1].split(" ─")[0] for line in text.splitlines() if "╭─ " in line]
    panels = ["Data", "Model", "Training", "Output", "Run / distributed"]
    assert titles == ["Arguments", "Options", *panels]
    options = text.split("╭─ Options")[1].split("╰")[0]
    assert "--help" in options and options.count("--") == 1  # nothing left ungrouped


def test_real_processes_train_eval_predict(tiny_data, tmp_path):
    """The installed entry point (python -m rnnfc_cli) chained as in the README."""
    model_dir = tmp_path / "model"
    env = {**os.environ, "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "rnnfc_cli"]
    train = subprocess.run(
        [*cmd, "train", str(tiny_data["train_npz"]), "-m", str(model_dir), *TINY_FLAGS, "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["model_dir"] == str(model_dir)
    assert "Training finished" not in train.stderr  # with --json, no table anywhere
    evaluated = subprocess.run(
        [*cmd, "eval", str(model_dir), str(tiny_data["test_long"]), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert evaluated.returncode == 0 and evaluated.stderr == "", evaluated.stderr
    assert json.loads(evaluated.stdout)["n"] == 12
    card = subprocess.run([*cmd, "info", str(model_dir)], capture_output=True, text=True, env=env)
    assert card.returncode == 0 and card.stderr == "", card.stderr
    assert "lstm" in card.stdout.lower()  # rnnfc info m | grep -i lstm
    predicted = subprocess.run(
        [*cmd, "predict", str(model_dir), str(tiny_data["test_wide"])],
        capture_output=True,
        text=True,
        env=env,
    )
    # Trained on 2 features, so 1-feature wide CSV is refused cleanly by the real process.
    assert predicted.returncode == 2
    assert predicted.stderr.count("\n") == 1 and "features per step" in predicted.stderr


def test_a_process_ends_with_every_line_out_or_quietly_when_its_reader_stops(
    trained_model, tmp_path
):
    """The entry point ends the process itself after flushing (``cli.run``): a predict
    writing 20,000 lines ends 0 with all of them out; ``rnnfc predict model big.npy |
    head -1``, whose pipe closes while lines are still coming, ends without a traceback
    (exit 1 where the closed pipe is seen; some sandboxes' pipes take it all, exit 0)."""
    rows = np.random.default_rng(0).normal(size=(20_000, 3, 2)).astype(np.float32)
    np.save(tmp_path / "many.npy", rows)
    cmd = [
        sys.executable,
        "-m",
        "rnnfc_cli",
        "predict",
        str(trained_model),
        str(tmp_path / "many.npy"),
    ]
    whole = subprocess.run(cmd, capture_output=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.count(b"\n") == 20_001 and whole.stdout.endswith(b"\n")
    reader = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = reader.stdout.readline()
    reader.stdout.close()
    _, err = reader.communicate(timeout=300)
    assert first == b"id,label\n"
    assert reader.returncode in (0, 1)
    assert b"Traceback" not in err and b"Exception ignored" not in err, err


def test_every_train_option_reaches_the_training_request(monkeypatch, tiny_data, tmp_path):
    """Each flag lands in the request the library trains from (whose configs are what the
    model directory saves), and config.toml holds the flags as given."""
    import tomllib

    requests = []

    def capture(request, progress):
        del progress
        requests.append(request)
        return {"model_dir": str(request.model_dir), "diverged_at": None}

    monkeypatch.setattr(api, "train_model", capture)
    flags = [
        "--epochs",
        "1",
        "--cell",
        "gru",
        "--hidden",
        "6",
        "--layers",
        "2",
        "--unidirectional",
        "--pool",
        "attention",
        "--dense",
        "5,4",
        "--dropout",
        "0.2",
        "--layer-norm",
        "--patch",
        "2",
        "--normalize",
        "sequence",
        "--lr",
        "0.002",
        "--weight-decay",
        "0.01",
        "--warmup",
        "3",
        "--clip-norm",
        "0.5",
        "--label-smoothing",
        "0.1",
        "--class-weight",
        "balanced",
        "--monitor",
        "val_loss",
        "--patience",
        "4",
        "--min-steps",
        "0",
        "--seeds",
        "2",
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--no-buckets",
        "--conv",
        "4:3,3:2",
        "--downsample",
        "2",
        "--block-pool",
        "1",
        "--no-skip",
        "--branch-dropout",
        "0.25",
        "--refit",
        "off",
    ]
    result = invoke("train", tiny_data["train_long"], "-m", tmp_path / "m", "-q", "--json", *flags)
    assert result.exit_code == 0, result.stderr
    (request,) = requests
    assert request.model_options == {
        "cell": "gru",
        "hidden": 6,
        "layers": 2,
        "bidirectional": False,
        "pool": "attention",
        "dense": (5, 4),
        "dropout": 0.2,
        "layer_norm": True,
        "patch": 2,
        "precision": "float32",
        "conv": "4:3,3:2",
        "downsample": 2,
        "block_pool": 1,
        "skip": False,
        "branch_dropout": 0.25,
    }
    assert request.train == TrainConfig(
        epochs=1,
        lr=0.002,
        weight_decay=0.01,
        warmup_steps=3,
        clip_norm=0.5,
        label_smoothing=0.1,
        class_weight="balanced",
        monitor="val_loss",
        patience=4,
        min_steps=0,
        ensemble=2,
        batch_size=8,
        seed=3,
        length_buckets=False,
        refit="off",
    )
    assert request.normalize == "sequence"
    saved = tomllib.loads(request.extra_files["config.toml"].decode())
    assert saved["cell"] == "gru" and saved["seeds"] == 2 and saved["buckets"] is False


def test_divergence_is_reported_with_exit_1_after_saving(monkeypatch, tiny_data, tmp_path):
    summary = {"model_dir": "m", "best_epoch": 2, "diverged_at": {"epoch": 3, "step": 9}}
    monkeypatch.setattr(api, "train_model", lambda request, progress: summary)
    result = invoke("train", tiny_data["train_long"], "-m", tmp_path / "m", "-q", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["diverged_at"] == {"epoch": 3, "step": 9}
    assert "epoch 3, step 9" in result.stderr and "best epoch before it (2)" in result.stderr


def test_internal_error_is_one_line_with_a_log_and_debug_shows_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RNNFC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RNNFC_DEBUG", "")  # restored after the test, --debug sets it

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "describe", broken)
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error: RuntimeError: boom" in err
    log = err.split("traceback in ")[1].rstrip(")")
    assert "RuntimeError: boom" in Path(log).read_text()
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "info", str(tmp_path)])


def test_config_file_sets_options_flags_win_and_a_run_reproduces(tiny_data, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        'hidden = 16\npool = ["last", "mean"]\nepochs = 2\nbatch-size = 8\nconv = "none"\n'
        'refit = "off"\n'
    )
    first = tmp_path / "first"
    result = invoke("train", tiny_data["train_npz"], "-m", first, "--config", config, "--hidden", 8)
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke("info", first, "--json").stdout)
    assert (info["model"]["hidden"], info["model"]["pool"]) == (8, "last,mean")
    assert (info["train"]["epochs"], info["train"]["batch_size"]) == (2, 8)
    again = tmp_path / "again"
    result = invoke("train", tiny_data["train_npz"], "-m", again, "--config", first / "config.toml")
    assert result.exit_code == 0, result.stderr
    assert (again / "params.msgpack").read_bytes() == (first / "params.msgpack").read_bytes()


def test_config_file_errors_name_the_file_and_setting(tiny_data, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("hiden = 3\n")
    code = main(
        ["train", str(tiny_data["train_npz"]), "-m", str(tmp_path / "m"), "--config", str(config)]
    )
    assert code == 2
    assert f"--config {config}: unknown setting 'hiden'" in capsys.readouterr().err
    config.write_text("hidden = \n")
    code = main(
        ["train", str(tiny_data["train_npz"]), "-m", str(tmp_path / "m"), "--config", str(config)]
    )
    assert code == 2 and "not valid TOML" in capsys.readouterr().err
