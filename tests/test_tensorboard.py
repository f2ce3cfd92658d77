"""``--tensorboard DIR``: event files TensorBoard reads, holding the metrics log's numbers."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from conftest import TINY_FLAGS

from rnnfc_cli.cli import main

TINY = [*TINY_FLAGS, "--epochs", "3"]  # the last --epochs counts


def _events(directory: Path):
    """Every event in the TFRecord files of ``directory`` (TensorBoard's on-disk format)."""
    from tensorboardX.proto import event_pb2

    for path in sorted(directory.glob("events.out.tfevents.*")):
        raw = path.read_bytes()
        position = 0
        while position < len(raw):
            (length,) = struct.unpack("<Q", raw[position : position + 8])
            payload = raw[position + 12 : position + 12 + length]  # after length and its CRC
            position += 12 + length + 4  # and the payload's CRC
            event = event_pb2.Event()
            event.ParseFromString(payload)
            yield event


def test_scalars_match_the_metrics_log(tiny_data, tmp_path):
    model_dir, logs = tmp_path / "m", tmp_path / "tb"
    argv = ["train", str(tiny_data["train_npz"]), "-m", str(model_dir), *TINY]
    assert main([*argv, "--tensorboard", str(logs)]) == 0
    scalars: dict[str, dict[int, float]] = {}
    for event in _events(logs):
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    for tag, field in (("loss/val", "val_loss"), ("accuracy/train", "train_accuracy")):
        expected = {record["epoch"]: record[field] for record in records}
        assert scalars[tag] == pytest.approx(expected, rel=1e-6)


def test_missing_tensorboardx_is_one_clear_line(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    argv = ["train", str(tiny_data["train_npz"]), "-m", str(tmp_path / "m"), *TINY]
    code = main([*argv, "--tensorboard", str(tmp_path / "tb")])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'rnnfc[tensorboard]'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
