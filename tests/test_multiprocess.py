"""Multi-host training, on one machine: two processes joined by ``jax.distributed`` over
loopback (CPU, gloo) train in step, agree exactly, match a one-process run, and only
process 0 writes the model directory."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
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
from rnnfc_cli.callbacks import Callback
from rnnfc_cli.train import ArraySet, fit

seqs, labels = make_sequences(40, seed=3)
data = ArraySet(np.nan_to_num(padded(seqs)).astype(np.float32),
                np.array([len(s) for s in seqs], np.int32),
                np.array([0 if l == "up" else 1 for l in labels], np.int32))
model = build_model(ModelConfig(2, 2, **TINY_MODEL))
config = TrainConfig(epochs=3, batch_size=16, min_steps=0, patience=100)
result = fit(model, config, data, data, Callback())
leaves = [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(result.params)]
print(json.dumps({"devices": result.devices, "steps": result.steps, "params": leaves,
                  "processes": jax.process_count(), "local": jax.local_device_count()}))
"""


@contextlib.contextmanager
def _coordinator_address() -> Iterator[str]:
    """A loopback HOST:PORT for a ``jax.distributed`` coordinator, its port held for the run.

    Probing a free port and closing the probe before the coordinator binds it races: the
    kernel may give the port to another process in between (another xdist worker's
    coordinator, even). So the probe stays bound, with SO_REUSEPORT, until the run is
    over. The coordinator's gRPC server binds with SO_REUSEPORT too (gRPC's default on
    Linux), so it shares the port; the kernel never hands a port held this way to anyone
    else's ``bind(0)``, and an explicit bind without SO_REUSEPORT fails. The probe never
    listens, so every connection reaches the coordinator. Should gRPC stop setting
    SO_REUSEPORT, process 0 fails loudly ("Failed to add port"), never silently.
    """
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"


def _start(args: list[str], cpu_devices: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1"}
    if cpu_devices is not None:
        flags = f"--xla_force_host_platform_device_count={cpu_devices}"
        env["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {flags}"  # keeps the suite's
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _finish(*processes: subprocess.Popen) -> list[tuple[str, str]]:
    """(stdout, stderr) of each process, which must all succeed; when one fails, the
    others (which may wait for it forever) are killed."""
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=240)
            assert process.returncode == 0, err[-3000:]
            outputs.append((out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def test_two_processes_train_identically_and_like_one():
    tests = os.path.dirname(__file__)
    with _coordinator_address() as coordinator:
        runs = [_start([sys.executable, "-c", _FIT, tests, coordinator, str(i)]) for i in (0, 1)]
        single = _start([sys.executable, "-c", _FIT, tests])
        finished = _finish(*runs, single)
    first, second, alone = (json.loads(out.splitlines()[-1]) for out, _ in finished)
    # Each process splits its share over its own CPU devices (one per core); alone, a
    # 16-row batch stays on one CPU device (too few rows to split).
    assert first["processes"] == 2 and first["devices"] == 2 * first["local"]
    assert alone["devices"] == 1
    assert first["steps"] == second["steps"] == alone["steps"] == 9
    assert first["params"] == second["params"]  # in step, bit for bit
    for a, b in zip(first["params"], alone["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def _own_lines(stderr: str) -> list[str]:
    """stderr without Gloo's connection notice (native code's, sent there from stdout)."""
    return [line for line in stderr.splitlines() if not line.startswith("[Gloo] ")]


def test_the_cli_writes_one_model_directory_from_process_0(tiny_data, tmp_path):
    model_dir = tmp_path / "m"
    command = [sys.executable, "-m", "rnnfc_cli", "train", str(tiny_data["train_npz"])]
    command += ["-m", str(model_dir), "--hidden", "8", "--dense", "8", "--epochs", "2"]
    command += ["--refit", "off", "--conv", "4:3"]  # batch norm's statistics span processes
    command += ["--batch-size", "8", "--json", "--num-processes", "2"]
    with _coordinator_address() as coordinator:
        runs = [
            _start([*command, "--coordinator", coordinator, "--process-id", str(i)], cpu_devices=1)
            for i in (0, 1)
        ]
        (out0, err0), (out1, err1) = _finish(*runs)
    summary = json.loads(out0)
    assert summary["processes"] == 2 and summary["devices"] == 2
    assert (out1, _own_lines(err1)) == ("", [])  # only process 0 reports, even progress
    # Process 0's stderr is its progress alone: no warnings, errors or tracebacks from any
    # library.
    assert [line.split()[:2] for line in _own_lines(err0)] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert (model_dir / "summary.json").is_file()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["m"]
