"""``rnnfc report``: one self-contained HTML page about a model directory.

Learning curves, confusion matrices as heat maps, per-class scores, the model card and,
given test data, the test scores and the most confidently wrong sequences. Figures are
drawn with matplotlib (the optional ``report`` extra) as inline SVG, so the page is one
file that opens anywhere, offline.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from rnnfc_cli import api, checkpoint
from rnnfc_cli.config import column_choice
from rnnfc_cli.errors import MissingExtraError

WRONG_EXAMPLES = 6
RIGHT_CLASSES = 6  # classes shown with a right answer each, the first ones
_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1b1f24; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; font-size: 1.2rem;
  border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
.muted { color: #57606a; } table { border-collapse: collapse; margin: .6rem 0; }
td, th { padding: .25rem .7rem; border-bottom: 1px solid #eaeef2; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: .6rem 1rem; min-width: 9rem; }
.card b { display: block; font-size: 1.4rem; } figure { margin: .5rem 0; min-width: 0; }
figure svg { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; }
"""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            "rnnfc report draws with matplotlib, which is not installed: "
            "pip install 'rnnfc[report]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    figure.clear()
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: the SVG is inlined


def learning_curves(plt, history: list[dict[str, Any]], best_epoch: int) -> str:
    """Loss and accuracy per epoch, training and validation, the best epoch marked."""
    epochs = [record["epoch"] for record in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for axis, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        axis.plot(epochs, [r[f"train_{metric}"] for r in history], label="training")
        axis.plot(epochs, [r[f"val_{metric}"] for r in history], label="validation")
        axis.axvline(best_epoch, color="#888", linestyle="--", linewidth=1)
        right_half = best_epoch > 0.5 * max(epochs)
        axis.annotate(
            f"best epoch {best_epoch}",
            (best_epoch, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(-4 if right_half else 4, 0),
            textcoords="offset points",
            ha="right" if right_half else "left",
            color="#555",
        )
        axis.set_title(title)
        axis.set_xlabel("epoch")
    axes[0].set_yscale("log")
    axes[1].legend(loc="lower right", frameon=False)
    return _svg(figure)


def confusion_heatmap(plt, confusion: list[list[int]], labels: list[Any], title: str) -> str:
    """Counts, rows true and columns predicted, shaded by the fraction of each true class."""
    counts = np.asarray(confusion)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(3.2, 0.55 * len(labels) + 1.8)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [str(label) for label in labels]
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(counts):
            colour = "white" if share[i, j] > 0.6 else "black"
            axis.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of true class")
    return _svg(figure)


def wrong_examples(plt, scored: api.Scored, limit: int = WRONG_EXAMPLES) -> tuple[str, int]:
    """The misclassified sequences the model was surest of, plotted over time, each with
    the steps that drove it to its wrong answer.

    Returns the SVG (empty when nothing is wrong) and how many sequences were wrong.
    """
    predicted = scored.proba.argmax(axis=1)
    wrong = np.flatnonzero(predicted != scored.true)
    if wrong.size == 0:
        return "", 0
    surest = wrong[np.argsort(-scored.proba[wrong, predicted[wrong]], kind="stable")][:limit]
    return sequence_figure(plt, scored, surest), int(wrong.size)


def right_examples(plt, scored: api.Scored, per_class: int = 1) -> str:
    """For each class (up to ``RIGHT_CLASSES``), the correctly classified sequence the
    model was surest of, with the steps that drove it there (empty when none is right)."""
    predicted = scored.proba.argmax(axis=1)
    chosen = []
    for label in range(len(scored.classes))[:RIGHT_CLASSES]:
        right = np.flatnonzero((predicted == label) & (scored.true == label))
        order = np.argsort(-scored.proba[right, label], kind="stable")
        chosen.extend(right[order][:per_class].tolist())
    return sequence_figure(plt, scored, np.array(chosen, int)) if chosen else ""


def sequence_figure(plt, scored: api.Scored, rows: np.ndarray) -> str:
    """Sequences ``rows`` of the scored data over time, three to a row, each above a heat
    strip of how much each step drove the predicted class (integrated gradients summed
    over features: red toward the prediction, blue away from it)."""
    predicted = scored.proba.argmax(axis=1)
    strips = scored.attribute(rows, predicted[rows])
    columns = min(3, len(rows))
    grid_rows = -(-len(rows) // columns)
    figure = plt.figure(figsize=(4.2 * columns, 3.0 * grid_rows), layout="constrained")
    grid = figure.add_gridspec(grid_rows, columns)
    names = scored.sequences.feature_names
    for k, (index, strip) in enumerate(zip(rows, strips, strict=True)):
        row, column = divmod(k, columns)
        cell = grid[row, column].subgridspec(2, 1, height_ratios=[5, 1], hspace=0)
        axis = figure.add_subplot(cell[0])
        heat = figure.add_subplot(cell[1], sharex=axis)
        length = int(scored.sequences.lengths[index])
        values = np.asarray(scored.sequences.inputs[[index], :length])[0]
        for feature in range(values.shape[1]):
            label = names[feature] if names else f"feature {feature}"
            axis.plot(values[:, feature], linewidth=1, label=label)
        if not values.shape[1]:  # tokens alone: the strip below is the sequence
            axis.set_yticks([])
        truth, guess = scored.classes[scored.true[index]], scored.classes[predicted[index]]
        confidence = scored.proba[index, predicted[index]]
        axis.set_title(
            f"{scored.sequences.ids[index]}: true {truth}, predicted {guess} ({confidence:.2f})",
            fontsize=9,
        )
        axis.tick_params(labelbottom=False)
        per_step = strip.sum(axis=1)
        limit = float(np.abs(per_step).max()) or 1.0
        heat.imshow(
            per_step[None, :],
            aspect="auto",
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            extent=(-0.5, length - 0.5, 0, 1),
            interpolation="nearest",
        )
        heat.set_yticks([])
        heat.set_xlabel("step")
        _token_labels(heat, scored.sequences, index, length)
    if values.shape[1] <= 8:
        figure.axes[0].legend(fontsize=7, frameon=False)
    return _svg(figure)


# Sequences up to this many steps get their tokens written in the strip, one per step.
TOKEN_LABEL_STEPS = 60


def _token_labels(heat, sequences, index: int, length: int) -> None:
    """Write each step's tokens (the token columns joined by "/") in its cell of the
    strip: a token strip, where tokens were read."""
    if not sequences.categories or length > TOKEN_LABEL_STEPS:
        return
    for step in range(length):
        text = "/".join(
            str(column.texts[column.codes[index, step]]) or "∅" for column in sequences.categories
        )
        heat.text(step, 0.5, text, ha="center", va="center", rotation=90, fontsize=5)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def _per_class_table(report: dict[str, Any]) -> str:
    head = "<tr><th>label</th>" + "".join(
        f'<th class="num">{name}</th>' for name in ("precision", "recall", "F1", "support")
    )
    rows = []
    for label, scores in report["per_class"].items():
        cells = [f"{scores[k]:.4f}" for k in ("precision", "recall", "f1")]
        cells.append(str(scores["support"]))
        rows.append(
            f"<tr><td>{html.escape(str(label))}</td>"
            + "".join(f'<td class="num">{c}</td>' for c in cells)
            + "</tr>"
        )
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def _score_cards(report: dict[str, Any]) -> str:
    cards = [
        ("accuracy", f"{report['accuracy']:.4f}"),
        ("macro F1", f"{report['macro_f1']:.4f}"),
        ("log loss", f"{report['log_loss']:.4f}"),
        ("sequences", str(report["n"])),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><span class="muted">{k}</span><b>{v}</b></div>' for k, v in cards
        )
        + "</div>"
    )


def _scores_section(plt, title: str, report: dict[str, Any], note: str) -> str:
    heatmap = confusion_heatmap(plt, report["confusion_matrix"], report["labels"], title)
    return (
        f"<h2>{html.escape(title)}</h2><p class='muted'>{html.escape(note)}</p>"
        + _score_cards(report)
        + f"<div class='grid'><figure>{heatmap}</figure><div>"
        + _per_class_table(report)
        + "</div></div>"
    )


def _model_card(info: dict[str, Any]) -> str:
    model, train, summary = info["model"], info["train"], info["summary"]
    data = summary.get("train_data", {})
    dense = ",".join(str(size) for size in model["dense"]) or "none"
    architecture = [
        ("cell", f"{model['cell']} x {model['layers']} layer(s), hidden {model['hidden']}"),
        ("direction", "bidirectional" if model["bidirectional"] else "forward"),
        ("patch", f"{model['patch']} step(s) per recurrent step"),
        ("pooling", model["pool"]),
        ("head", f"dense {dense}, dropout {model['dropout']}"),
        ("parameters", f"{summary.get('params', 0):,}"),
        ("ensemble", f"{summary.get('ensemble', 1)} member(s)"),
    ]
    data_rows = [
        ("training data", f"{data.get('source')} ({data.get('format')})"),
        ("sequences", data.get("sequences")),
        (
            "length",
            f"{data.get('length_min')}-{data.get('length_max')}, median "
            f"{data.get('length_median')}",
        ),
        ("features", info["features"]),
        ("feature names", ", ".join(info["feature_names"] or []) or "-"),
        ("columns chosen", "; ".join(column_choice(info["columns"])) or "all"),
        ("classes", json.dumps(data.get("class_counts", {}))),
        ("preprocessing", f"normalize {info['normalize']}"),
    ]
    training = [(key, value) for key, value in train.items()]
    training += [
        ("epochs run", f"{summary['epochs_run']} (best {summary['best_epoch']})"),
        (
            "train time",
            f"{summary['train_seconds']:.1f} s on {summary.get('devices', 1)} x "
            f"{summary.get('backend', '?')}",
        ),
        ("trained at", summary.get("trained_at", "?")),
    ]
    versions = list(summary.get("versions", {}).items())
    return (
        "<h2>Model card</h2><div class='grid'>"
        + f"<div><h3>Architecture</h3>{_table(architecture)}<h3>Data</h3>{_table(data_rows)}</div>"
        + f"<div><h3>Training</h3>{_table(training)}<h3>Versions</h3>{_table(versions)}</div>"
        + "</div>"
    )


def build(model_dir: Path, test: api.Scored | None = None) -> str:
    """The report page for ``model_dir``, with ``test`` scores when given."""
    plt = _pyplot()
    files = checkpoint.read_model(model_dir)[0] if test is None else test.model
    info = api.description(files)
    summary = info["summary"]
    validation = files.validation
    history = files.history
    parts = [
        f"<h1>rnnfc model report</h1><p class='muted'>{html.escape(str(model_dir))} · "
        f"{html.escape(str(summary.get('trained_at', '')))}</p>",
        "<p>The best epoch, on the validation data:</p>",
        _score_cards(
            {
                "accuracy": summary["best_val_accuracy"],
                "macro_f1": validation.get("macro_f1", float("nan")),
                "log_loss": summary["best_val_loss"],
                "n": summary.get("val_data", {}).get("sequences", 0),
            }
        ),
        "<h2>Learning curves</h2>"
        f"<figure>{learning_curves(plt, history, summary['best_epoch'])}</figure>",
    ]
    if test is not None:
        test_report = test.report.to_dict(test.classes)
        parts.append(
            _scores_section(
                plt,
                "Test scores",
                test_report,
                f"{test.sequences.source}, {test.report.n} sequences",
            )
        )
        figure, wrong = wrong_examples(plt, test)
        parts.append("<h2>Most confidently wrong</h2>")
        shown = min(wrong, WRONG_EXAMPLES)
        parts.append(
            f"<p class='muted'>{wrong} of {test.report.n} test sequences are misclassified; "
            f"the {shown} the model was surest of:</p><figure>{figure}</figure>"
            if wrong
            else "<p>Every test sequence is classified correctly.</p>"
        )
        right = right_examples(plt, test)
        if right:
            parts.append(
                "<h2>Surest right answers</h2><p class='muted'>For each class, the test "
                "sequence the model classified correctly with the most confidence.</p>"
                f"<figure>{right}</figure>"
            )
        parts.append(
            "<p class='muted'>The strip under each sequence shows which steps drove the "
            "prediction: integrated gradients of the log-probability of the predicted class "
            "with respect to the model's (scaled) inputs, summed over features; red pushed "
            "toward the prediction, blue away from it.</p>"
        )
    if validation:
        parts.append(
            _scores_section(
                plt, "Validation scores", validation, "the held-out data that chose the best epoch"
            )
        )
    parts.append(_model_card(info))
    title = f"rnnfc report · {model_dir.name}"
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
