"""Multi-host training, on one machine: two processes joined by ``jax.distributed`` over
loopback (CPU, gloo) train in step, agree exactly, match a one-process run, and only
process 0 writes the model directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

_FIT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from rnnfc_cli import runtime
if len(sys.argv) > 2:
    runtime.start_distributed(sys.argv[2], 2, int(sys.argv[3]))
import jax, numpy as np
from conftest import TINY_MODEL, make_sequences, padded
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.models import build_model
from rnnfc_cli.train import ArraySet, SilentCallbacks, fit

seqs, labels = make_sequences(40, seed=3)
data = ArraySet(np.nan_to_num(padded(seqs)).astype(np.float32),
                np.array([len(s) for s in seqs], np.int32),
                np.array([0 if l == "up" else 1 for l in labels], np.int32))
model = build_model(ModelConfig(2, 2, **TINY_MODEL))
config = TrainConfig(epochs=3, batch_size=16, min_steps=0, patience=100)
result = fit(model, config, data, data, SilentCallbacks())
leaves = [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(result.params)]
print(json.dumps({"devices": result.devices, "steps": result.steps, "params": leaves,
                  "processes": jax.process_count(), "local": jax.local_device_count()}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(args: list[str], cpu_devices: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1"}
    if cpu_devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={cpu_devices}"
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    return out


def test_two_processes_train_identically_and_like_one():
    tests = os.path.dirname(__file__)
    coordinator = f"127.0.0.1:{_free_port()}"
    runs = [_start([sys.executable, "-c", _FIT, tests, coordinator, str(i)]) for i in (0, 1)]
    single = _start([sys.executable, "-c", _FIT, tests])
    first, second, alone = (json.loads(_finish(p).splitlines()[-1]) for p in (*runs, single))
    # Each process splits its share over its own CPU devices (one per core); alone, a
    # 16-row batch stays on one CPU device (too few rows to split).
    assert first["processes"] == 2 and first["devices"] == 2 * first["local"]
    assert alone["devices"] == 1
    assert first["steps"] == second["steps"] == alone["steps"] == 9
    assert first["params"] == second["params"]  # in step, bit for bit
    for a, b in zip(first["params"], alone["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_the_cli_writes_one_model_directory_from_process_0(tiny_data, tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    model_dir = tmp_path / "m"
    command = [sys.executable, "-m", "rnnfc_cli", "train", str(tiny_data["train_npz"])]
    command += ["-m", str(model_dir), "--hidden", "8", "--dense", "8", "--epochs", "2"]
    command += ["--batch-size", "8", "--json", "--coordinator", coordinator]
    runs = [
        _start([*command, "--num-processes", "2", "--process-id", str(i)], cpu_devices=1)
        for i in (0, 1)
    ]
    outputs = [_finish(p) for p in runs]
    summary = json.loads(outputs[0])
    assert summary["processes"] == 2 and summary["devices"] == 2
    assert outputs[1] == ""  # only process 0 reports
    assert (model_dir / "summary.json").is_file()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["m"]
