"""The library's entry points, used as a Python caller would (public names only), checked
against each other and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from rnnfc_cli import api
from rnnfc_cli.config import TrainConfig
from rnnfc_cli.errors import BadInputError


def test_predict_evaluate_and_describe_agree(trained_model, tiny_data):
    test = str(tiny_data["test_long"])
    predictions = api.predict(trained_model, test)
    assert predictions.proba.shape == (12, 2)
    np.testing.assert_allclose(predictions.proba.sum(axis=1), 1.0, rtol=1e-5)
    # Labels are the argmax of the probabilities, named as in the data, in input order.
    assert predictions.labels == [predictions.classes[i] for i in predictions.proba.argmax(1)]
    assert predictions.ids == [f"s{i}" for i in range(12)]

    # Small chunks give the same result as one.
    chunked = list(api.predict_chunks(trained_model, test, batch_size=8))
    np.testing.assert_allclose(np.concatenate([c.proba for c in chunked]), predictions.proba)

    report, classes = api.evaluate(trained_model, test)
    true = _labels(tiny_data["test_long"])
    assert classes == predictions.classes
    assert report.accuracy == pytest.approx(accuracy_score(true, predictions.labels))
    assert report.macro_f1 == pytest.approx(f1_score(true, predictions.labels, average="macro"))
    proba = predictions.proba.astype(np.float64)  # float32 sums stray from 1 by ~1e-7
    proba /= proba.sum(axis=1, keepdims=True)
    assert report.log_loss == pytest.approx(log_loss(true, proba, labels=classes), rel=1e-4)

    described = api.describe(trained_model)
    assert described["labels"] == classes
    assert described["model"]["hidden"] == 8 and described["features"] == 2


def test_a_library_caller_gets_the_command_lines_checks(tiny_data, tmp_path):
    request = api.TrainRequest(
        data=str(tiny_data["train_npz"]),
        model_dir=tmp_path / "m",
        model_options={"dropout": 1.5},
        train=TrainConfig(epochs=1),
    )
    with pytest.raises(BadInputError, match=r"--dropout 1\.5"):
        api.train_model(request)
    assert list(tmp_path.iterdir()) == []  # nothing written, no lock left
    with pytest.raises(BadInputError, match="--val-split 0"):
        TrainConfig(val_split=0.0)


def _labels(path) -> list[str]:
    import csv

    with open(path, newline="") as handle:
        by_id = {row["id"]: row["label"] for row in csv.DictReader(handle)}
    return list(by_id.values())
