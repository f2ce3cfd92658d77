"""Training learns: the real command line on the bundled motion data (four activities whose
recordings are easy to tell apart), with XLA's default flags, as users run it.

A flipped gradient, labels shuffled apart from their inputs, or a label vocabulary that
differs between training and prediction each fails one of these.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score, recall_score

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
CLASSES = ["idle", "jump", "run", "walk"]


def rnnfc(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnfc_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def true_labels(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["id"]: row["label"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def motion_model(tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("learning") / "motion"
    # Defaults but for fewer epochs (the warm-up still starts the first epoch near chance)
    # and no refit (tests/test_refit.py): what is learned is what the metrics log shows.
    command = ["train", SAMPLE / "motion_train.csv", "-m", model, "--epochs", 10, "-q"]
    trained = rnnfc(*command, "--refit", "off")
    assert trained.returncode == 0, trained.stderr
    return model


@pytest.mark.xla_default
def test_validation_accuracy_rises_from_chance_and_held_out_accuracy_is_high(motion_model):
    history = [
        json.loads(line)
        for line in (motion_model / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    # The first epoch starts from chance (its mean training loss is near ln 4, four
    # balanced classes) and the warm-up keeps its steps small; validation accuracy rises.
    assert history[0]["train_loss"] >= 0.8 * math.log(4)
    accuracy = [record["val_accuracy"] for record in history]
    assert accuracy[0] <= 0.75
    assert max(accuracy) >= 0.9 and max(accuracy) - accuracy[0] >= 0.2

    scored = rnnfc("eval", motion_model, SAMPLE / "motion_test.csv", "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["accuracy"] >= 0.9


@pytest.fixture(scope="module")
def motion_predictions(motion_model) -> list[dict[str, str]]:
    """``predict --proba`` of the test sequences, as CSV rows."""
    predicted = rnnfc("predict", motion_model, SAMPLE / "motion_test.csv", "--proba")
    assert predicted.returncode == 0, predicted.stderr
    return list(csv.DictReader(io.StringIO(predicted.stdout)))


@pytest.mark.xla_default
def test_predicted_labels_are_the_argmax_of_their_probabilities_and_the_right_names(
    motion_predictions,
):
    rows = motion_predictions
    assert list(rows[0]) == ["id", "label"] + [f"prob_{c}" for c in CLASSES]
    for row in rows:
        probabilities = {c: float(row[f"prob_{c}"]) for c in CLASSES}
        assert row["label"] == max(probabilities, key=probabilities.get)
    truth = true_labels(SAMPLE / "motion_test.csv")
    expected = [truth[row["id"]] for row in rows]
    got = [row["label"] for row in rows]
    # Every class is recognised under its own name (a permuted vocabulary fails here).
    assert min(recall_score(expected, got, labels=CLASSES, average=None)) >= 0.8


@pytest.mark.xla_default
def test_the_accuracy_gate_fails_below_and_passes_at_a_known_accuracy(
    motion_model, motion_predictions, tmp_path
):
    """On test data with 16 sequences relabelled, ``eval`` gives the accuracy of
    ``predict``'s labels (labels in its input are ignored), scored by scikit-learn, and the
    gate passes at that accuracy and fails 0.01 above it."""
    source = SAMPLE / "motion_test.csv"
    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    wrong = list(dict.fromkeys(row["id"] for row in rows))[:16]  # get a label not theirs
    for row in rows:
        if row["id"] in wrong:
            row["label"] = CLASSES[(CLASSES.index(row["label"]) + 1) % len(CLASSES)]
    test = tmp_path / "test.csv"
    with test.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    labels = {row["id"]: row["label"] for row in motion_predictions}
    truth = true_labels(test)
    accuracy = accuracy_score([truth[i] for i in labels], [labels[i] for i in labels])
    assert 0.5 < accuracy < 1.0  # learned, and the relabelled sequences are wrong

    passed = rnnfc("eval", motion_model, test, "--json", "--min-accuracy", accuracy)
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout)["accuracy"] == pytest.approx(accuracy)
    failed = rnnfc("eval", motion_model, test, "--min-accuracy", round(accuracy + 0.01, 4))
    assert failed.returncode == 1
    assert "below --min-accuracy" in failed.stderr
