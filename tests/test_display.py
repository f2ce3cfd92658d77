"""The training display: live table and learning curve on a terminal, the best epoch
highlighted at the end, plain lines elsewhere, nothing with --quiet."""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from rnnfc_cli import display
from rnnfc_cli.train import EpochRecord


def _records(accuracies):
    best = -1.0
    for epoch, accuracy in enumerate(accuracies, start=1):
        improved = accuracy > best
        best = max(best, accuracy)
        yield EpochRecord(
            epoch, epoch * 3, 1.0 / epoch, accuracy, 1.0 - accuracy, accuracy, 0.01, improved
        )


def _run(monkeypatch, terminal: bool, **options) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100, color_system=None)
    monkeypatch.setattr(display, "console", console)
    accuracies = [0.5, 0.7, 0.9, 0.8, 0.85, 0.6, 0.7, 0.75, 0.8]
    with display.TrainingDisplay(**options) as shown:
        shown.on_start(len(accuracies), 3)
        for record in _records(accuracies):
            shown.on_step(record.epoch, 3)
            shown.on_epoch(record, None)
            if terminal and not options.get("quiet"):
                console.print(shown.__rich__())  # what the live display draws now
    return out.getvalue()


def test_terminal_ends_with_the_epochs_table_best_epoch_included(monkeypatch):
    text = _run(monkeypatch, terminal=True)
    assert "val_acc ▁" in text and "best epoch 3" in text  # the live curve
    assert "Epochs (best in green)" in text
    table = text[text.index("Epochs (best in green)") :]
    rows = [line.split()[0] for line in table.splitlines()[2:] if line.strip()]
    assert "3" in rows  # the best epoch, though older than the recent ones shown
    assert "epoch 9/9  loss" not in text  # no per-epoch lines unless --verbose


def test_verbose_adds_a_line_per_epoch_and_quiet_prints_nothing(monkeypatch):
    assert _run(monkeypatch, terminal=True, verbose=True).count("val_acc 0.") >= 9
    assert _run(monkeypatch, terminal=True, quiet=True) == ""
    assert _run(monkeypatch, terminal=False, quiet=True) == ""


def test_off_a_terminal_one_plain_line_per_epoch(monkeypatch):
    lines = _run(monkeypatch, terminal=False).splitlines()
    assert [line.split()[1] for line in lines] == [f"{e}/9" for e in range(1, 10)]
    assert lines[2].endswith("*") and not lines[3].endswith("*")


@pytest.mark.parametrize("values", [[1, 2, 3, 4], [0.5] * 3, [3, 1, 2], list(range(100))])
def test_sparkline_follows_the_values(values):
    line = display.sparkline(values, width=48)
    shown = values[-48:]
    assert len(line) == len(shown)
    order = [display._SPARK.index(c) for c in line]
    pairs = zip(itertools.pairwise(shown), itertools.pairwise(order), strict=True)
    for (a, b), (x, y) in pairs:
        assert (a < b) <= (x <= y) and (a > b) <= (x >= y)


@pytest.mark.parametrize(
    ("terminal", "quiet", "delay", "shown"),
    [
        (True, False, 0.0, True),
        (False, False, 0.0, False),
        (True, True, 0.0, False),
        (True, False, 60.0, False),
    ],
    ids=["terminal", "pipe", "quiet", "short-run"],
)
def test_prediction_progress_only_on_a_terminal_for_long_runs(
    monkeypatch, terminal, quiet, delay, shown
):
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100, color_system=None)
    monkeypatch.setattr(display, "console", console)
    monkeypatch.setattr(display.PredictionProgress, "DELAY", delay)
    with display.PredictionProgress("predict", quiet=quiet) as progress:
        for done in range(0, 1001, 250):
            progress(done, 1000)
    assert ("1000/1000" in out.getvalue()) == shown, out.getvalue()


def test_batches_are_reported_as_they_finish_and_add_up():
    import jax.numpy as jnp
    import numpy as np

    from rnnfc_cli import inference

    def proba_fn(params, inputs, lengths):
        return jnp.ones((1, len(inputs), 2)) * 0.5

    reported = []
    inputs = np.zeros((1000, 4, 1), np.float32)
    proba = inference.predict_proba(
        proba_fn, None, inputs, np.full(1000, 4), batch_size=64, on_batch=reported.append
    )
    assert proba.shape == (1000, 2)
    assert reported == [64] * 15 + [40]  # every batch once, the last one's real rows
