"""Classification metrics from true class indices and predicted probabilities. NumPy only."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

_LOG_EPS = 1e-15


@dataclasses.dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, with its number of true examples."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything ``rnnfc eval`` reports.

    Attributes:
      accuracy: fraction of sequences whose most probable class is the true one.
      macro_f1: unweighted mean of the per-class F1 over every class of the model.
      log_loss: mean negative log probability of the true class (clipped at 1e-15).
      n: number of sequences scored.
      confusion: int[classes, classes]; rows are true classes, columns predictions.
      per_class: one entry per class of the model, in class order.
      unknown_token_rate: for a model that reads tokens, the share of the data's tokens
        its vocabularies do not hold (``preprocessing.unknown_token_rate``), else None.
    """

    accuracy: float
    macro_f1: float
    log_loss: float
    n: int
    confusion: np.ndarray
    per_class: tuple[ClassScores, ...]
    unknown_token_rate: float | None = None

    def to_dict(self, labels: list[Any]) -> dict[str, Any]:
        """The public JSON schema of ``rnnfc eval --json``."""
        tokens = (
            {}
            if self.unknown_token_rate is None
            else {"unknown_token_rate": self.unknown_token_rate}
        )
        return {
            **tokens,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "log_loss": self.log_loss,
            "n": self.n,
            "labels": labels,
            "confusion_matrix": self.confusion.tolist(),
            "per_class": {
                str(label): dataclasses.asdict(scores)
                for label, scores in zip(labels, self.per_class, strict=True)
            },
        }


def classification_report(true: np.ndarray, proba: np.ndarray) -> Report:
    """Score predictions.

    Args:
      true: int[n], true class indices.
      proba: float[n, classes], predicted probabilities (rows sum to 1).

    Returns:
      The ``Report``; a class with no true and no predicted examples scores 0, as in
      scikit-learn with ``zero_division=0``.
    """
    n, num_classes = proba.shape
    predicted = proba.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    hits = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = _safe_divide(hits, predicted_count)
    recall = _safe_divide(hits, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return Report(
        accuracy=float(hits.sum() / n),
        macro_f1=float(f1.mean()),
        log_loss=float(log_loss_and_accuracy(proba, true)[0]),
        n=int(n),
        confusion=confusion,
        per_class=tuple(
            ClassScores(float(p), float(r), float(f), int(s))
            for p, r, f, s in zip(precision, recall, f1, support, strict=True)
        ),
    )


def log_loss_and_accuracy(proba: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
    """Mean log loss (probabilities clipped at ``_LOG_EPS``) and accuracy of probabilities
    [..., n, classes] against labels [n]; one value per leading index (an ensemble's
    members, say)."""
    index = np.broadcast_to(labels[:, None], (*proba.shape[:-1], 1))
    picked = np.take_along_axis(proba, index, axis=-1)[..., 0]
    loss = -np.log(np.clip(picked, _LOG_EPS, None)).mean(axis=-1)
    accuracy = (proba.argmax(axis=-1) == labels).mean(axis=-1)
    return loss, accuracy


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(
        numerator,
        denominator,
        out=np.zeros_like(numerator, dtype=np.float64),
        where=denominator > 0,
    )
