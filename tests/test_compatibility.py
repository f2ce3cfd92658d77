"""Model directories written by earlier versions load and predict exactly as they did.

``tests/data/model_before_conv`` was trained (a 2-member ensemble of a small bidirectional
LSTM with patches of 2 steps) by the commit before the conv front end existed, and
``expected.jsonl`` is what that commit's ``predict --proba --format jsonl`` printed for
``input.npz``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnfc_cli.cli import app

SAVED = Path(__file__).resolve().parent / "data" / "model_before_conv"


@pytest.mark.parametrize("copy", ["inference copy", "orbax checkpoint"])
def test_a_model_saved_before_the_conv_front_end_predicts_as_it_did(copy, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(SAVED / "model", model)
    if copy == "orbax checkpoint":
        (model / "params.msgpack").unlink()  # predict falls back to the Orbax checkpoint
    result = CliRunner().invoke(
        app, ["predict", str(model), str(SAVED / "input.npz"), "--proba", "--format", "jsonl"]
    )
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [json.loads(line) for line in (SAVED / "expected.jsonl").read_text().splitlines()]
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    for new, old in zip(got, expected, strict=True):
        assert new["probs"] == pytest.approx(old["probs"], abs=1e-6)
    info = CliRunner().invoke(app, ["info", str(model), "--json"])
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["model"]["conv"] == ""
