"""Eval metrics against scikit-learn, the independent oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from rnnfc_cli.metrics import classification_report


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 60),
    classes=st.integers(2, 5),
    seed=st.integers(0, 10_000),
    sharp=st.floats(0.1, 20.0),
)
def test_report_matches_sklearn(n, classes, seed, sharp):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) * sharp
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    report = classification_report(true, proba)
    predicted = proba.argmax(axis=1)
    labels = list(range(classes))
    assert report.accuracy == pytest.approx(skm.accuracy_score(true, predicted))
    assert report.macro_f1 == pytest.approx(
        skm.f1_score(true, predicted, labels=labels, average="macro", zero_division=0)
    )
    assert report.log_loss == pytest.approx(
        skm.log_loss(true, np.clip(proba, 1e-15, 1.0), labels=labels), rel=1e-6, abs=1e-9
    )
    np.testing.assert_array_equal(
        report.confusion, skm.confusion_matrix(true, predicted, labels=labels)
    )
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        true, predicted, labels=labels, zero_division=0
    )
    for c, scores in enumerate(report.per_class):
        assert scores.precision == pytest.approx(precision[c])
        assert scores.recall == pytest.approx(recall[c])
        assert scores.f1 == pytest.approx(f1[c])
        assert scores.support == support[c]


def test_json_schema_keys_and_label_order():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    out = classification_report(np.array([0, 1, 1]), proba).to_dict(["cat", 7])
    assert set(out) == {
        "accuracy",
        "macro_f1",
        "log_loss",
        "n",
        "labels",
        "confusion_matrix",
        "per_class",
    }
    assert out["labels"] == ["cat", 7]
    assert out["confusion_matrix"] == [[1, 0], [1, 1]]
    assert out["per_class"]["7"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
