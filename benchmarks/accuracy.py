"""Accuracy of rnnfc's defaults on nine UCR/UEA sets and two order tasks, beside published results.

Run by hand, never by CI. Needs the ``bench`` extra (``pip install -e ".[bench]"``): aeon's
wheel ships ArrowHead, OSULeaf, ACSF1, PickupGestureWiimoteZ, GunPoint, ItalyPowerDemand,
BasicMotions and JapaneseVowels, sktime's wheel ships PLAID (read with aeon's ``.ts``
reader), so no network is used. ``order_pulses`` and ``order_channels`` are the synthetic
tasks of ``benchmarks/order_tasks.py``, where only the order of short events decides the class.

For each dataset the standard TRAIN/TEST split is written to NPZ (``X`` float32 (N, T, F),
``y`` strings; unequal-length sets are NaN-padded and keep their ``lengths``), then the real
CLI of the current Python environment runs as subprocesses, once per seed::

    python -m rnnfc_cli train train.npz --model-dir D --seed S --json --quiet --force [EXTRA...]
    python -m rnnfc_cli eval D test.npz --json

Nothing is tuned per dataset: the defaults are what is measured. Anything after ``--`` on this
script's command line is passed to ``train`` unchanged, to compare settings::

    python benchmarks/accuracy.py                          # 11 sets x seeds 0,1,2
    python benchmarks/accuracy.py --datasets public        # the nine public sets only
    python benchmarks/accuracy.py --datasets ItalyPowerDemand,order_pulses --seeds 0
    python benchmarks/accuracy.py --ablation               # + the variants in ABLATION
    python benchmarks/accuracy.py --ablation-variants default,no-rnn -- --epochs 50

``--datasets`` takes names and the groups ``public`` (the nine), ``order`` (the order tasks)
and ``all`` (the default). ``--ablation`` also trains every variant of ``ABLATION`` (extra
``rnnfc train`` flags, after any given after ``--``) on the same sets and seeds and prints a
second table; ``--ablation-variants`` chooses which.

Markdown tables go to stdout (``--json``: one JSON object with every raw result instead, one
entry per dataset and variant); progress goes to stderr. With ``--work-dir`` the NPZ files
(``NAME_train.npz``, ``NAME_test.npz``, as ``defaults_sweep.py --data-dir`` reads them), the
model directories and one JSON record per run stay there; ``--resume`` then reuses the
finished runs whose ``train`` command is the same instead of training again (it does not know
whether rnnfc's code changed since). The exit code is 1 if any train or eval run failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import order_tasks

RNNFC = [sys.executable, "-m", "rnnfc_cli"]
PUBLIC_SETS = (
    "ArrowHead",
    "OSULeaf",
    "ACSF1",
    "PLAID",
    "PickupGestureWiimoteZ",
    "GunPoint",
    "ItalyPowerDemand",
    "BasicMotions",
    "JapaneseVowels",
)
SKTIME_SETS = ("PLAID",)  # not in aeon's wheel: read from sktime's datasets/data folder
ORDER_SETS = tuple(order_tasks.TASKS)
GROUPS = {"public": PUBLIC_SETS, "order": ORDER_SETS, "all": PUBLIC_SETS + ORDER_SETS}
GOAL_POINTS_BELOW_BEST = 3.0  # issue 12: no public set more than 3 points below its best
GOAL_ORDER = 0.97  # issue 12: the order tasks
# issue 12: median training time per set, by the training set's longest sequence
TIME_BUDGET = ((500, 120.0), (None, 300.0))

# Ablation variants: name -> (description, extra `rnnfc train` flags).
ABLATION: dict[str, tuple[str, list[str]]] = {
    "default": ("defaults", []),
    "no-conv": ("no conv front end", ["--conv", "none"]),
    "no-rnn": ("no RNN (conv + pooling only)", ["--layers", "0"]),
    "no-skip": ("no skip path", ["--no-skip"]),
    "no-refit": ("no refit", ["--refit", "off"]),
}

# Test accuracy on the standard TRAIN/TEST split, as published; None where no result for the
# set was found. Means over a source's runs where it made several.
# FCN, ResNet: Ismail Fawaz et al., "Deep learning for time series classification: a review"
#   (DMKD 2019), github.com/hfawaz/dl-4-tsc (commit e0233ef): results/results-ucr-128.csv (UCR
#   2018 archive, mean of 5 runs) for the seven univariate sets; results/results-mts.csv
#   (Baydogan's MTS archive, same 270/370 JapaneseVowels split as UEA's, mean of 10 runs).
#   BasicMotions is in neither. ResNet on BasicMotions: tsml-eval (below), fold 0. FCN on
#   BasicMotions: not found.
# InceptionTime: Ismail Fawaz et al. (DMKD 2020), github.com/hfawaz/InceptionTime:
#   results-InceptionTime-128.csv (UCR 2018, the 5-network ensemble); results-mts.csv for
#   JapaneseVowels and BasicMotions (UEA 2018 multivariate archive; added in commit 0d623a3,
#   removed from the repository in 365ce4d). tsml-eval's InceptionT fold 0 on BasicMotions
#   agrees (1.0).
# ROCKET: Dempster et al. (DMKD 2020), github.com/angus924/rocket results/results_ucr.csv
#   (mean of 10 runs on the split; unequal-length sets padded to the longest, per its notes).
#   BasicMotions: github.com/time-series-machine-learning/tsml-eval
#   results/classification/Multivariate/ROCKET_accuracy.csv, fold 0 = the standard split
#   (Ruiz et al., "The great multivariate time series classification bake off", DMKD 2021).
#   JapaneseVowels: not found (that bake off covers the equal-length sets only).
# PLAID and PickupGestureWiimoteZ have unequal lengths: published runs used the UCR 2018
#   archive's equal-length files, while rnnfc is given each sequence's own length.
MODELS = ("FCN", "ResNet", "InceptionTime", "ROCKET")
DEEP_MODELS = ("FCN", "ResNet", "InceptionTime")
PUBLISHED: dict[str, dict[str, float | None]] = {
    "ArrowHead": {"FCN": 0.8434, "ResNet": 0.8377, "InceptionTime": 0.8457, "ROCKET": 0.8143},
    "OSULeaf": {"FCN": 0.9785, "ResNet": 0.9802, "InceptionTime": 0.9421, "ROCKET": 0.9409},
    "ACSF1": {"FCN": 0.898, "ResNet": 0.916, "InceptionTime": 0.92, "ROCKET": 0.886},
    "PLAID": {"FCN": 0.9039, "ResNet": 0.9404, "InceptionTime": 0.9441, "ROCKET": 0.9026},
    "PickupGestureWiimoteZ": {
        "FCN": 0.744,
        "ResNet": 0.704,
        "InceptionTime": 0.76,
        "ROCKET": 0.83,
    },
    "GunPoint": {"FCN": 1.0, "ResNet": 0.9907, "InceptionTime": 1.0, "ROCKET": 1.0},
    "ItalyPowerDemand": {
        "FCN": 0.9629,
        "ResNet": 0.9615,
        "InceptionTime": 0.965,
        "ROCKET": 0.9696,
    },
    "BasicMotions": {"FCN": None, "ResNet": 1.0, "InceptionTime": 1.0, "ROCKET": 1.0},
    "JapaneseVowels": {"FCN": 0.993, "ResNet": 0.9916, "InceptionTime": 0.9919, "ROCKET": None},
}
PUBLISHED_SOURCES = {
    "FCN": "dl-4-tsc result files (Ismail Fawaz et al. 2019): results-ucr-128.csv, "
    "results-mts.csv; mean over runs",
    "ResNet": "dl-4-tsc result files (as FCN); BasicMotions: tsml-eval multivariate "
    "ResNet_accuracy.csv fold 0 (Ruiz et al. 2021)",
    "InceptionTime": "InceptionTime repository: results-InceptionTime-128.csv, "
    "results-mts.csv (commit 0d623a3)",
    "ROCKET": "ROCKET repository results_ucr.csv (mean of 10 runs); BasicMotions: tsml-eval "
    "multivariate ROCKET_accuracy.csv fold 0",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" in argv:
        cut = argv.index("--")
        own, extra = argv[:cut], argv[cut + 1 :]
    else:
        own, extra = argv, []
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after '--' are passed to 'rnnfc train' unchanged.",
    )
    parser.add_argument(
        "--datasets",
        default="all",
        help="Comma-separated dataset names or groups: public (the nine UCR/UEA sets), "
        "order (the order tasks), all (default: %(default)s).",
    )
    parser.add_argument(
        "--seeds", default="0,1,2", help="Comma-separated training seeds (default: %(default)s)."
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help=f"Also train the ablation variants ({', '.join(ABLATION)}) and print their table.",
    )
    parser.add_argument(
        "--ablation-variants",
        help="Comma-separated ablation variants to run (implies --ablation; default: all).",
    )
    parser.add_argument(
        "--json", action="store_true", help="Print all raw results as one JSON object."
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="Keep the NPZ files, model directories and run records here "
        "(default: a temp dir, deleted).",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Reuse finished runs recorded in --work-dir with the same train command.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="Seconds allowed for each train or eval run (default: no limit).",
    )
    args = parser.parse_args(own)
    names: list[str] = []
    for item in (d.strip() for d in args.datasets.split(",")):
        for name in GROUPS.get(item, (item,) if item else ()):
            if name not in names:
                names.append(name)
    args.datasets = names
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.datasets or not args.seeds:
        parser.error("need at least one dataset and one seed")
    if args.ablation_variants is not None:
        args.variants = [v.strip() for v in args.ablation_variants.split(",") if v.strip()]
        unknown = sorted(set(args.variants) - set(ABLATION))
        if unknown or not args.variants:
            parser.error(f"--ablation-variants: unknown {unknown}; known: {', '.join(ABLATION)}")
        args.ablation = True
    else:
        args.variants = list(ABLATION) if args.ablation else ["default"]
    if args.resume and args.work_dir is None:
        parser.error("--resume needs --work-dir")
    return args, extra


# ---------------------------------------------------------------------------------------------
# Data


def to_ntf(X: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """aeon's (N, C, T) array, or list of (C, T_i) arrays, as float32 (N, T, F) NaN-padded.

    Returns the array and, for unequal lengths, the per-sequence lengths (else None).
    """
    if isinstance(X, np.ndarray) and X.ndim == 3:
        return np.ascontiguousarray(X.transpose(0, 2, 1), dtype=np.float32), None
    series = [np.asarray(x, dtype=np.float32) for x in X]
    series = [x[None, :] if x.ndim == 1 else x for x in series]  # (C, T_i)
    channels = {x.shape[0] for x in series}
    if len(channels) != 1:
        raise ValueError(f"sequences have different channel counts: {sorted(channels)}")
    lengths = np.array([x.shape[1] for x in series], dtype=np.int64)
    out = np.full((len(series), int(lengths.max()), channels.pop()), np.nan, dtype=np.float32)
    for i, x in enumerate(series):
        out[i, : x.shape[1]] = x.T
    return out, (lengths if lengths.min() < lengths.max() else None)


def load_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One standard split as (X float32[n, time, features], lengths or None, y str[n])."""
    if name in order_tasks.TASKS:
        X, y, lengths = order_tasks.make(name, split)
        return X, lengths, y
    if name in SKTIME_SETS:
        from importlib.resources import files

        from aeon.datasets import load_from_ts_file

        path = files("sktime") / "datasets" / "data" / name / f"{name}_{split.upper()}.ts"
        X, y = load_from_ts_file(str(path))
    else:
        from aeon.datasets import load_classification

        X, y = load_classification(name, split=split)
    X, lengths = to_ntf(X)
    return X, lengths, np.asarray(y).astype(str)


def write_split(name: str, split: str, folder: Path) -> dict[str, Any]:
    X, lengths, y = load_split(name, split)
    arrays: dict[str, np.ndarray] = {"X": X, "y": y}
    if lengths is not None:
        arrays["lengths"] = lengths
    path = folder / f"{name}_{split}.npz"
    np.savez(path, **arrays)
    if lengths is None:
        length_range = [X.shape[1], X.shape[1]]
    else:
        length_range = [int(lengths.min()), int(lengths.max())]
    return {
        "path": str(path),
        "n": int(X.shape[0]),
        "length": length_range,
        "channels": int(X.shape[2]),
        "classes": len(np.unique(y)),
    }


# ---------------------------------------------------------------------------------------------
# Runs


def run_json(cmd: list[str], timeout: float | None) -> tuple[dict[str, Any] | None, str | None]:
    """Run a CLI command; its parsed JSON stdout, or None and an error line."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s: {shlex.join(cmd)}"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return None, f"exit {proc.returncode}: {tail}"
    try:
        return json.loads(proc.stdout), None
    except json.JSONDecodeError as exc:
        return None, f"stdout is not JSON ({exc}): {proc.stdout[:200]!r}"


def run_seed(
    train: dict[str, Any],
    test: dict[str, Any],
    model_dir: Path,
    seed: int,
    train_args: list[str],
    timeout: float | None,
) -> dict[str, Any]:
    train_cmd = [
        *RNNFC,
        "train",
        train["path"],
        "--model-dir",
        str(model_dir),
        "--seed",
        str(seed),
        "--json",
        "--quiet",
        "--force",  # a reused --work-dir holds the last run's model
        *train_args,
    ]
    eval_cmd = [*RNNFC, "eval", str(model_dir), test["path"], "--json"]
    record: dict[str, Any] = {"seed": seed, "ok": False, "train_command": train_cmd}
    started = time.perf_counter()
    summary, error = run_json(train_cmd, timeout)
    record["train_wall_seconds"] = round(time.perf_counter() - started, 3)
    if summary is None:
        record["error"] = f"train: {error}"
        return record
    record["train"] = summary
    metrics, error = run_json(eval_cmd, timeout)
    if metrics is None:
        record["error"] = f"eval: {error}"
        return record
    record["eval"] = metrics
    record.update(
        ok=True,
        test_accuracy=metrics["accuracy"],
        test_macro_f1=metrics.get("macro_f1"),
        test_log_loss=metrics.get("log_loss"),
        train_seconds=summary["train_seconds"],
        epochs_run=summary.get("epochs_run"),
        best_epoch=summary.get("best_epoch"),
        best_val_accuracy=summary.get("best_val_accuracy"),
    )
    return record


def reused_record(path: Path, train_args: list[str]) -> dict[str, Any] | None:
    """A finished run recorded at ``path`` with the same extra train arguments, else None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not record.get("ok") or record.get("train_args") != train_args:
        return None
    return {**record, "reused": True}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["test_accuracy"] for r in runs if r["ok"]]
    secs = [r["train_seconds"] for r in runs if r["ok"]]
    if not accs:
        return {"n_ok": 0, "n_failed": len(runs)}
    return {
        "n_ok": len(accs),
        "n_failed": len(runs) - len(accs),
        "mean_accuracy": statistics.fmean(accs),
        # Sample standard deviation over seeds (0 with a single seed).
        "std_accuracy": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "min_accuracy": min(accs),
        "max_accuracy": max(accs),
        "median_train_seconds": statistics.median(secs),
        "mean_train_seconds": statistics.fmean(secs),
    }


def best_deep(name: str) -> tuple[str | None, float | None]:
    """The best published deep model on ``name`` (ties joined by '/') and its accuracy."""
    published = PUBLISHED.get(name, {})
    scores = [(m, published[m]) for m in DEEP_MODELS if published.get(m) is not None]
    if not scores:
        return None, None
    best = max(score for _, score in scores)
    return "/".join(m for m, score in scores if score == best), best


def time_budget(max_length: int) -> float:
    return next(s for limit, s in TIME_BUDGET if limit is None or max_length <= limit)


# ---------------------------------------------------------------------------------------------
# Output


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def mean_accuracy(res: dict[str, Any]) -> float | None:
    return None if "error" in res else res["summary"].get("mean_accuracy")


def main_table(results: list[dict[str, Any]]) -> str:
    header = [
        "dataset",
        "train / test",
        "length x channels",
        "classes",
        "rnnfc acc (mean ± std)",
        "min",
        "train s (median)",
        *MODELS,
        "best published deep",
        "gap (pts)",
        f"within {GOAL_POINTS_BELOW_BEST:g} pts",
    ]
    rows = []
    for res in results:
        name = res["dataset"]
        if "error" in res:
            rows.append([name, "could not load (see below)", *["—"] * (len(header) - 2)])
            continue
        train, test, s = res["train_data"], res["test_data"], res["summary"]
        lo, hi = train["length"]
        model, best = best_deep(name)
        mean = s.get("mean_accuracy")
        acc = "failed" if mean is None else f"{mean:.3f} ± {s['std_accuracy']:.3f}"
        if s["n_failed"]:
            acc += f" ({s['n_failed']} failed)"
        gap = None if mean is None or best is None else 100 * (mean - best)
        published = PUBLISHED.get(name, {})
        rows.append(
            [
                name,
                f"{train['n']} / {test['n']}",
                f"{lo if lo == hi else f'{lo}-{hi}'} x {train['channels']}",
                str(train["classes"]),
                acc,
                fmt(s.get("min_accuracy")),
                fmt(s.get("median_train_seconds"), ".1f"),
                *(fmt(published.get(m)) for m in MODELS),
                "—" if best is None else f"{best:.3f} ({model})",
                fmt(gap, "+.1f"),
                "—" if gap is None else ("yes" if gap >= -GOAL_POINTS_BELOW_BEST else "no"),
            ]
        )
    return markdown(header, rows)


def goal_lines(results: list[dict[str, Any]]) -> list[str]:
    """Issue 12's goals, measured on the default variant's results."""
    lines = []
    public = [r for r in results if r["dataset"] in PUBLIC_SETS]
    done = [r for r in public if mean_accuracy(r) is not None and best_deep(r["dataset"])[1]]
    if done:
        ours = statistics.fmean(mean_accuracy(r) for r in done)
        theirs = statistics.fmean(best_deep(r["dataset"])[1] for r in done)
        scope = (
            f"the {len(PUBLIC_SETS)} public sets"
            if len(done) == len(PUBLIC_SETS)
            else f"{len(done)} of the {len(PUBLIC_SETS)} public sets (the goal needs all)"
        )
        lines.append(
            f"Mean over {scope}: rnnfc {ours:.3f}, best published deep model per set "
            f"{theirs:.3f} ({100 * (ours - theirs):+.1f} points)."
        )
        gaps = {r["dataset"]: 100 * (mean_accuracy(r) - best_deep(r["dataset"])[1]) for r in done}
        below = [f"{n} {g:+.1f}" for n, g in gaps.items() if g < -GOAL_POINTS_BELOW_BEST]
        lines.append(
            f"Within {GOAL_POINTS_BELOW_BEST:g} points of the best published deep model: "
            f"{len(gaps) - len(below)} of {len(gaps)}"
            + (
                f"; more than {GOAL_POINTS_BELOW_BEST:g} below: {', '.join(below)}."
                if below
                else "."
            )
        )
        met = len(done) == len(PUBLIC_SETS) and ours >= theirs and not below
        lines.append(
            f"Goal on the public sets (mean >= the best deep models' mean, none more than "
            f"{GOAL_POINTS_BELOW_BEST:g} points below its best): {'met' if met else 'not met'}."
        )
    order = [r for r in results if r["dataset"] in ORDER_SETS and mean_accuracy(r) is not None]
    if order:
        mean = statistics.fmean(mean_accuracy(r) for r in order)
        each = ", ".join(f"{r['dataset']} {mean_accuracy(r):.3f}" for r in order)
        verdict = "met" if all(mean_accuracy(r) >= GOAL_ORDER for r in order) else "not met"
        lines.append(f"Order tasks: mean {mean:.3f} ({each}); goal >= {GOAL_ORDER}: {verdict}.")
    over = []
    for r in results:
        seconds = None if "error" in r else r["summary"].get("median_train_seconds")
        if seconds is not None and seconds > time_budget(r["train_data"]["length"][1]):
            over.append(f"{r['dataset']} {seconds:.0f} s")
    timed = sum(1 for r in results if "error" not in r and r["summary"]["n_ok"])
    if timed:
        lines.append(
            f"Training time (median per set; goal < {TIME_BUDGET[0][1]:.0f} s up to "
            f"{TIME_BUDGET[0][0]} steps, < {TIME_BUDGET[1][1]:.0f} s longer): "
            + (
                f"over budget: {', '.join(over)}."
                if over
                else f"within budget on all {timed} sets."
            )
        )
    return lines


def group_mean(by_set: dict[str, float | None], names: list[str]) -> tuple[float | None, str]:
    """Mean accuracy over ``names`` and its text; the mean is None unless every set ran."""
    values = [by_set[n] for n in names if by_set.get(n) is not None]
    if not names:
        return None, "—"
    if not values:
        return None, "failed"
    mean = statistics.fmean(values)
    if len(values) < len(names):
        return None, f"{mean:.3f} ({len(values)} of {len(names)})"
    return mean, f"{mean:.3f}"


def ablation_table(results: list[dict[str, Any]], variants: list[str]) -> tuple[str, list[str]]:
    names = list(dict.fromkeys(r["dataset"] for r in results))
    public = [n for n in names if n in PUBLIC_SETS]
    order = [n for n in names if n in ORDER_SETS]
    header = ["variant", "train flags", "public sets", "order tasks", "all", *names]
    rows, overall = [], {}
    for variant in variants:
        by_set = {r["dataset"]: mean_accuracy(r) for r in results if r["variant"] == variant}
        description, flags = ABLATION[variant]
        overall[variant], all_text = group_mean(by_set, names)
        rows.append(
            [
                f"{variant}: {description}",
                " ".join(flags) or "—",
                group_mean(by_set, public)[1],
                group_mean(by_set, order)[1],
                all_text,
                *(fmt(by_set.get(n)) for n in names),
            ]
        )
    lines = []
    if "default" in overall and "no-rnn" in overall:
        ours, conv = overall["default"], overall["no-rnn"]
        if ours is None or conv is None:
            verdict = "unknown: a variant has failed runs"
        else:
            verdict = f"{'yes' if ours > conv else 'no'} ({ours:.3f} vs {conv:.3f})"
        lines.append(
            "The recurrent layer earns its place (default beats no RNN on the mean over all "
            f"sets run): {verdict}."
        )
    return markdown(header, rows), lines


def per_seed_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for res in results:
        where = f"{res['dataset']} [{res['variant']}]"
        if "error" in res:
            lines.append(f"{where}: could not load: {res['error']}")
        for r in res.get("runs", []):
            if r["ok"]:
                lines.append(
                    f"{where} seed {r['seed']}: test acc {r['test_accuracy']:.4f}, "
                    f"macro-F1 {r['test_macro_f1']:.4f}, train {r['train_seconds']:.1f} s, "
                    f"epochs {r['epochs_run']} (best {r['best_epoch']}, "
                    f"val acc {fmt(r['best_val_accuracy'])})"
                    + (" [reused]" if r.get("reused") else "")
                )
            else:
                lines.append(f"{where} seed {r['seed']}: FAILED {r['error']}")
    return lines


def cli_version() -> str:
    proc = subprocess.run([*RNNFC, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout.strip() or proc.stderr.strip()) or f"unknown (exit {proc.returncode})"


def source_revision() -> str | None:
    """Git commit of the rnnfc source, with '-dirty' if the tree has changes; None if unknown."""
    try:
        import rnnfc_cli

        root = Path(rnnfc_cli.__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "rnnfc_cli"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (ImportError, OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------


def run_dataset(
    name: str,
    work: Path,
    args: argparse.Namespace,
    extra: list[str],
) -> list[dict[str, Any]]:
    """Every selected variant and seed on one dataset: one result per variant."""
    try:
        train, test = write_split(name, "train", work), write_split(name, "test", work)
    except Exception as exc:  # unknown name, missing package, odd data: report and go on
        error = f"{type(exc).__name__}: {exc}"
        log(f"[{name}] could not load: {error}")
        return [{"dataset": name, "variant": v, "error": error} for v in args.variants]
    log(
        f"[{name}] train {train['n']} x {train['length']} x {train['channels']}, "
        f"test {test['n']}, {train['classes']} classes"
    )
    results = []
    for variant in args.variants:
        train_args = [*extra, *ABLATION[variant][1]]
        folder = work / "runs" / variant
        folder.mkdir(parents=True, exist_ok=True)
        runs = []
        for seed in args.seeds:
            record_path = folder / f"{name}_seed{seed}.json"
            r = reused_record(record_path, train_args) if args.resume else None
            if r is None:
                log(f"[{name} {variant}] seed {seed}: training ...")
                r = run_seed(
                    train, test, folder / f"{name}_seed{seed}", seed, train_args, args.timeout
                )
                r["train_args"] = train_args
                record_path.write_text(json.dumps(r, indent=1))
            if r["ok"]:
                log(
                    f"[{name} {variant}] seed {seed}: test acc {r['test_accuracy']:.4f} "
                    f"(train {r['train_seconds']:.1f} s, {r['epochs_run']} epochs)"
                    + (", reused" if r.get("reused") else "")
                )
            else:
                log(f"[{name} {variant}] seed {seed}: FAILED {r['error']}")
            runs.append(r)
        summary = summarise(runs)
        model, best = best_deep(name)
        mean = summary.get("mean_accuracy")
        results.append(
            {
                "dataset": name,
                "variant": variant,
                "train_flags": ABLATION[variant][1],
                "train_data": train,
                "test_data": test,
                "runs": runs,
                "summary": summary,
                "published": PUBLISHED.get(name),
                "best_published_deep": {"model": model, "accuracy": best},
                "gap_points": None if mean is None or best is None else 100 * (mean - best),
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = parse_args(argv)
    version = cli_version()
    meta: dict[str, Any] = {
        "rnnfc_version": version,
        "rnnfc_source_revision": source_revision(),
        "benchmark_command": shlex.join(["python", "benchmarks/accuracy.py", *argv]),
        "train_command": " ".join(
            [
                "rnnfc train TRAIN.npz --model-dir D --seed S --json --quiet --force",
                *map(shlex.quote, extra),
            ]
        ),
        "eval_command": "rnnfc eval D TEST.npz --json",
        "extra_train_args": extra,
        "datasets": args.datasets,
        "seeds": args.seeds,
        "variants": {
            v: {"description": ABLATION[v][0], "flags": ABLATION[v][1]} for v in args.variants
        },
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aeon_version": package_version("aeon"),
        "sktime_version": package_version("sktime"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "published": PUBLISHED,
        "published_sources": PUBLISHED_SOURCES,
    }
    log(f"{version}; train args: {meta['train_command']}; variants: {', '.join(args.variants)}")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rnnfc-acc-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.datasets:
            results.extend(run_dataset(name, work, args, extra))
    meta["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    versions = next(
        (r["train"].get("versions") for res in results for r in res.get("runs", []) if r["ok"]),
        None,
    )
    meta["library_versions"] = versions

    failed = any("error" in res or res["summary"]["n_failed"] for res in results)
    if args.json:
        print(json.dumps({**meta, "results": results}, indent=2))
        return 1 if failed else 0

    revision = meta["rnnfc_source_revision"] or "unknown"
    print(
        f"# {version} (source {revision}), aeon {meta['aeon_version']}, "
        f"sktime {meta['sktime_version']}"
    )
    if versions:
        print("# versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"# benchmark: {meta['benchmark_command']}")
    print(f"# per seed:  {meta['train_command']}; {meta['eval_command']}")
    print(f"# seeds {','.join(map(str, args.seeds))}; std is the sample std over seeds;")
    print(
        "# train s = median train_seconds from 'rnnfc train --json'; gap = ours - best, in points"
    )
    print("# published: test accuracy on the same split (sources in benchmarks/accuracy.py)")
    print()
    default = [r for r in results if r["variant"] == "default"]
    if default:
        print(main_table(default))
        print()
        for line in goal_lines(default):
            print(line)
        print()
    if args.ablation:
        table, lines = ablation_table(results, args.variants)
        print("Ablation: mean test accuracy over seeds; group means over the sets run")
        print()
        print(table)
        print()
        for line in lines:
            print(line)
        print()
    for line in per_seed_lines(results):
        print(f"- {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
