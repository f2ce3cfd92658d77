"""Data-parallel training and prediction over several devices (4 CPU devices forced in a
subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import TINY_MODEL, make_sequences, padded
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.models import build_model
from rnnfc_cli.callbacks import Callback
from rnnfc_cli.train import ArraySet, fit
from rnnfc_cli.inference import make_proba_fn, predict_proba
from rnnfc_cli.parallel import data_devices

seqs, labels = make_sequences(40, seed=3)
data = ArraySet(np.nan_to_num(padded(seqs)).astype(np.float32),
                np.array([len(s) for s in seqs], np.int32),
                np.array([0 if l == "up" else 1 for l in labels], np.int32))
model = build_model(ModelConfig(2, 2, conv="4:3", branch_dropout=0.0, **TINY_MODEL))
out = {"device_count": jax.device_count()}
for devices in (1, 4):
    config = TrainConfig(epochs=3, batch_size=16, min_steps=0, patience=100, devices=devices)
    result = fit(model, config, data, data, Callback())
    proba = predict_proba(make_proba_fn(model), result.params, data.inputs, data.lengths)
    leaves = [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(result.params)]
    out[devices] = {"devices": result.devices, "steps": result.steps, "proba": proba.tolist(),
                    "params": leaves}
params = result.params
sharded = predict_proba(make_proba_fn(model), params, data.inputs, data.lengths, 7)
single = predict_proba(make_proba_fn(model), params, data.inputs, data.lengths, 7,
                       devices=jax.local_devices()[:1])
out["sharded_predict_diff"] = float(np.abs(sharded - single).max())
out["auto"] = {size: len(data_devices(0, size, 256)) for size in (128, 32)}
out["auto_32_rows"] = {steps: len(data_devices(0, 32, 256, steps)) for steps in (32, 128, 4096)}
print(json.dumps(out))
"""


# Added to the suite's XLA flags (conftest.py), which subprocesses must keep.
FOUR_CPU_DEVICES = "--xla_force_host_platform_device_count=4"


def test_four_devices_train_like_one():
    tests_dir = os.path.dirname(__file__)
    env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} {FOUR_CPU_DEVICES}"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, tests_dir], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["device_count"] == 4
    one, four = out["1"], out["4"]
    assert (one["devices"], four["devices"]) == (1, 4)
    assert one["steps"] == four["steps"] == 9
    np.testing.assert_allclose(four["proba"], one["proba"], atol=1e-4)
    assert out["sharded_predict_diff"] < 1e-5
    # Auto: as many devices as split the batch into shares of >= 32 rows on CPU.
    assert out["auto"] == {"128": 4, "32": 1}
    # Or of >= 16 rows where rows x steps >= 1024: 32 rows of 128 steps split in 2.
    assert out["auto_32_rows"] == {"32": 1, "128": 2, "4096": 2}
    for a, b in zip(one["params"], four["params"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)


def test_train_uses_the_devices_asked_for_and_reports_them(tmp_path):
    """RNNFC_DEVICES sets the default (the automatic choice is checked in the test above);
    more devices than there are are refused."""
    from conftest import make_sequences, padded

    seqs, labels = make_sequences(256, seed=4)
    data = tmp_path / "train.npz"
    np.savez(data, X=padded(seqs), y=np.array(labels))
    env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} {FOUR_CPU_DEVICES}"}
    cmd = [sys.executable, "-m", "rnnfc_cli", "train", str(data), "-q", "--json"]
    cmd += ["--hidden", "8", "--dense", "8", "--epochs", "1", "--refit", "off", "--conv", "none"]
    done = subprocess.run(
        [*cmd, "-m", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env={**env, "RNNFC_DEVICES": "3"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["devices"] == 3
    refused = subprocess.run(
        [*cmd, "-m", str(tmp_path / "m8"), "--devices", "8"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert refused.returncode == 2 and "--devices 8: only 4" in refused.stderr


def test_the_devices_flag_wins_over_the_environment(tiny_data, tmp_path, monkeypatch):
    """Told by the refusal of more devices than there are: the number refused is the
    flag's when given, else RNNFC_DEVICES's."""
    from typer.testing import CliRunner

    from rnnfc_cli.cli import app

    monkeypatch.setenv("RNNFC_DEVICES", "4096")
    argv = ["train", str(tiny_data["train_npz"]), "-m", str(tmp_path / "m")]
    from_env = CliRunner().invoke(app, argv)
    from_flag = CliRunner().invoke(app, [*argv, "--devices", "4095"])
    assert from_env.exit_code == from_flag.exit_code == 2
    assert "--devices 4096: only" in from_env.stderr
    assert "--devices 4095: only" in from_flag.stderr
