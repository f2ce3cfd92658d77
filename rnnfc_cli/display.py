"""Rich rendering: the live training display on stderr, the results' tables on stdout.

The result of a command goes to stdout (a table here, or the JSON the CLI prints instead
with ``--json``); progress, logs and warnings go to stderr, so ``rnnfc eval ... >
metrics.txt`` keeps the metrics and a pipe never sees a progress bar. Rich strips colour
from a stream that is not a terminal or when ``NO_COLOR`` is set; on a non-terminal (a CI
log) training prints one plain line per epoch instead of redrawing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rnnfc_cli.callbacks import Callback
from rnnfc_cli.config import column_choice

console = Console(stderr=True, highlight=False)  # progress and notes
results = Console(highlight=False)  # the result tables


def _fmt(value: float) -> str:
    return f"{value:.4f}"


_SPARK = "▁▂▃▄▅▆▇█"
RECENT_EPOCHS = 6


def sparkline(values: list[float], width: int = 48) -> str:
    """Unicode blocks for ``values`` (the last ``width``), scaled from their min to max."""
    shown = np.asarray(values[-width:], dtype=float)
    shown = shown[np.isfinite(shown)]
    if shown.size == 0:
        return ""
    low, high = shown.min(), shown.max()
    scaled = (shown - low) / (high - low) if high > low else np.full(shown.shape, 0.5)
    return "".join(_SPARK[i] for i in np.rint(scaled * (len(_SPARK) - 1)).astype(int))


def epochs_table(records: list[Any], best_epoch: int | None, title: str | None = None) -> Table:
    """The given epochs' metrics; the best epoch's row in bold green."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column("epoch", justify="right")
    for name in ("loss", "acc", "val_loss", "val_acc", "time"):
        table.add_column(name, justify="right")
    for record in records:
        style = "bold green" if record.epoch == best_epoch else None
        table.add_row(
            f"{record.epoch}{' *' if record.improved else '  '}",
            _fmt(record.train_loss),
            _fmt(record.train_accuracy),
            _fmt(record.val_loss),
            _fmt(record.val_accuracy),
            f"{record.seconds:.2f}s",
            style=style,
        )
    return table


class TrainingDisplay(Callback):
    """Progress of ``fit``. On a terminal: a progress bar over a live table of the last
    epochs and a sparkline of validation accuracy, ending with the epochs table and the
    best epoch highlighted. Elsewhere (CI logs): one plain line per epoch.

    A ``callbacks.Callback``; use as a context manager around training.
    ``verbose`` also prints a line per epoch on a terminal, kept above the live display.
    """

    def __init__(self, quiet: bool = False, verbose: bool = False):
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.live_display = console.is_terminal and not quiet
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[dim]{task.fields[left]}"),
            console=console,
        )
        self.live = Live(self, console=console, transient=True, refresh_per_second=8)
        self.task = None
        self.epochs = 0
        self.started = 0.0
        self.records: list[Any] = []
        self.best_epoch: int | None = None

    def __enter__(self) -> TrainingDisplay:
        if self.live_display:
            self.live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.live_display:
            self.live.stop()
            if self.records:
                shown = self.records[-RECENT_EPOCHS * 2 :]
                best = [r for r in self.records if r.epoch == self.best_epoch]
                if best and best[0] not in shown:
                    shown = [best[0], *shown]
                console.print(epochs_table(shown, self.best_epoch, "Epochs (best in green)"))

    def __rich__(self):
        parts = [self.progress.get_renderable()]
        if self.records:
            recent = self.records[-RECENT_EPOCHS:]
            parts.append(epochs_table(recent, self.best_epoch))
            curve = sparkline([r.val_accuracy for r in self.records])
            parts.append(f"[dim]val_acc[/] {curve}  [dim]best epoch {self.best_epoch}[/]")
        return Group(*parts)

    def on_start(self, epochs: int, steps_per_epoch: int) -> None:
        self.epochs = epochs
        self.started = time.perf_counter()
        if self.live_display:
            self.task = self.progress.add_task(
                "train", total=steps_per_epoch, epoch=f"1/{epochs}", left=""
            )

    def on_step(self, epoch: int, step_in_epoch: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step_in_epoch, epoch=f"{epoch}/{self.epochs}")

    def on_epoch(self, record: Any, params: Any) -> None:
        del params
        self.records.append(record)
        if record.improved:  # the newest improvement is the best epoch (``FitResult``)
            self.best_epoch = record.epoch
        elapsed = time.perf_counter() - self.started
        left = elapsed / len(self.records) * (self.epochs - record.epoch)
        if self.task is not None:
            self.progress.update(self.task, left=f"≤{_duration(left)} left")
        if self.quiet or (self.live_display and not self.verbose):
            return
        stats = (
            f"loss {_fmt(record.train_loss)}  acc {_fmt(record.train_accuracy)}  "
            f"val_loss {_fmt(record.val_loss)}  val_acc {_fmt(record.val_accuracy)}"
        )
        mark = " *" if record.improved else ""
        console.print(f"epoch {record.epoch}/{self.epochs}  {stats}  {record.seconds:.2f}s{mark}")

    def on_snapshot(self, snapshot: Any) -> None:
        del snapshot


class PredictionProgress:
    """A progress bar on stderr for ``predict`` and ``eval`` runs that take a while:
    sequences done, rate, time left. It appears only on a terminal, only without ``-q``,
    and only once a run has gone on for ``DELAY`` seconds, so short runs and pipes see
    nothing. Use as a context manager; call it with (sequences done, in all)."""

    DELAY = 2.0

    def __init__(self, what: str, quiet: bool = False):
        self.what = what
        self.enabled = console.is_terminal and not quiet
        self.started = time.perf_counter()
        self.progress: Progress | None = None

    def __enter__(self) -> PredictionProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            if time.perf_counter() - self.started < self.DELAY:
                return
            self.progress = Progress(
                TextColumn(self.what),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.progress.add_task(self.what, total=total, rate="")
            self.progress.start()
        task = self.progress.tasks[0]
        rate = f"{task.speed:,.0f} sequences/s" if task.speed else ""
        self.progress.update(self.task, completed=done, total=total, rate=rate)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render_train_summary(summary: dict[str, Any]) -> None:
    table = Table(title="Training finished", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("model directory", summary["model_dir"]),
        ("best epoch", f"{summary['best_epoch']} of {summary['epochs_run']}"),
        ("best val accuracy", _fmt(summary["best_val_accuracy"])),
        ("best val loss", _fmt(summary["best_val_loss"])),
        ("train time", f"{summary['train_seconds']:.1f}s ({summary['steps']} steps)"),
        ("parameters", f"{summary['params']:,}"),
        ("devices", f"{summary['devices']} x {summary['backend']}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    results.print(table)


def render_eval(report: dict[str, Any]) -> None:
    """The metrics, per-class scores and confusion matrix of ``rnnfc eval``."""
    head = Table(show_header=False, title="Evaluation", title_justify="left")
    head.add_column(style="bold")
    head.add_column(justify="right")
    head.add_row("sequences", str(report["n"]))
    head.add_row("accuracy", _fmt(report["accuracy"]))
    head.add_row("macro F1", _fmt(report["macro_f1"]))
    head.add_row("log loss", _fmt(report["log_loss"]))
    if "unknown_token_rate" in report:
        head.add_row("unknown tokens", _fmt(report["unknown_token_rate"]))
    results.print(head)

    per_class = Table(title="Per class", title_justify="left")
    per_class.add_column("label")
    for name in ("precision", "recall", "f1", "support"):
        per_class.add_column(name, justify="right")
    for label, scores in report["per_class"].items():
        per_class.add_row(
            label,
            _fmt(scores["precision"]),
            _fmt(scores["recall"]),
            _fmt(scores["f1"]),
            str(scores["support"]),
        )
    results.print(per_class)

    confusion = Table(
        title="Confusion matrix (rows: true, columns: predicted)", title_justify="left"
    )
    confusion.add_column("")
    labels = [str(label) for label in report["labels"]]
    for label in labels:
        confusion.add_column(label, justify="right")
    for i, (label, row) in enumerate(zip(labels, report["confusion_matrix"], strict=True)):
        cells = [f"[bold green]{count}[/]" if i == j else str(count) for j, count in enumerate(row)]
        confusion.add_row(label, *cells)
    results.print(confusion)


def render_info(info: dict[str, Any], verbose: bool = False) -> None:
    """The model card of ``rnnfc info``; ``verbose`` adds the training settings."""
    model, summary = info["model"], info["summary"]
    data = summary.get("train_data", {})
    table = Table(show_header=False, title=f"Model {info['model_dir']}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    dense = ",".join(str(size) for size in model["dense"]) or "none"
    rows = [
        ("cell", f"{model['cell']} x {model['layers']} layer(s), hidden {model['hidden']}"),
        ("pooling / head", f"{model['pool']} / dense {dense}, dropout {model['dropout']}"),
        ("parameters", f"{summary.get('params', 0):,}"),
        ("labels", ", ".join(str(label) for label in info["labels"])),
        ("features", _features(info)),
        *([("tokens", _tokens(info["tokens"]))] if info.get("tokens") else []),
        ("input format", info["input_format"]),
        (
            "training data",
            f"{data.get('sequences')} sequences, length "
            f"{data.get('length_min')}-{data.get('length_max')} "
            f"(median {data.get('length_median')})",
        ),
        (
            "best val accuracy",
            f"{_fmt(summary['best_val_accuracy'])} (epoch {summary['best_epoch']})",
        ),
        ("trained", f"{summary.get('trained_at', '?')} in {summary['train_seconds']:.1f}s"),
        ("model id", summary.get("model_id", "-")),
        ("versions", ", ".join(f"{k} {v}" for k, v in summary.get("versions", {}).items())),
    ]
    if verbose:
        rows += [(f"train: {name}", str(value)) for name, value in info["train"].items()]
    for name, value in rows:
        table.add_row(name, value)
    results.print(table)


def _tokens(tokens: dict[str, Any]) -> str:
    """``event: 12 tokens, embedding 7`` per token column."""
    parts = [
        f"{name}: {size:,} tokens, embedding {embedding}"
        for name, size, embedding in zip(
            tokens["columns"], tokens["vocabulary_sizes"], tokens["embedding_sizes"], strict=True
        )
    ]
    split = f" (split: {tokens['split']})" if tokens["split"] else ""
    return "; ".join(parts) + split


def _features(info: dict[str, Any]) -> str:
    names = info["feature_names"]
    text = f"{info['features']}" + (f" ({', '.join(names)})" if names else "")
    return text + "".join(f"; {part}" for part in column_choice(info["columns"]))
