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

import numpy as np
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


def test_a_model_saved_before_mean_pooling_between_blocks_keeps_the_maximum(tiny_data, tmp_path):
    """Models saved with ``--block-pool`` above 1 before the mean existed took the maximum
    between the conv blocks; their config.json has no ``block_pooling``, and they must
    predict as with "max", not with today's default."""
    from conftest import save_random_model

    from rnnfc_cli import api

    options = {"hidden": 4, "dense": (4,), "conv": "4:3,4:3", "downsample": 4, "block_pool": 2}
    options["block_pooling"] = "max"
    model = tmp_path / "model"
    save_random_model(model, tiny_data["train_npz"], options, "feature", 1)
    data = str(tiny_data["test_long"])
    with_max = api.predict(model, data).proba
    config = json.loads((model / "config.json").read_text())
    assert config["format_version"] == 1  # older versions read it right: they take the max
    del config["model"]["block_pooling"]  # as written before the field existed
    (model / "config.json").write_text(json.dumps(config))
    np.testing.assert_array_equal(api.predict(model, data).proba, with_max)
    config["model"]["block_pooling"] = "mean"
    (model / "config.json").write_text(json.dumps(config))
    assert not np.allclose(api.predict(model, data).proba, with_max)
    # Written with the mean, the format is 2, which versions that read only 1 refuse
    # (they would skip block_pooling and take the maximum).
    del options["block_pooling"]
    save_random_model(tmp_path / "mean", tiny_data["train_npz"], options, "feature", 1)
    assert json.loads((tmp_path / "mean" / "config.json").read_text())["format_version"] == 2
