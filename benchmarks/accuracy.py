"""Accuracy of rnnfc's defaults on standard UCR/UEA splits, next to published results.

Run by hand, never by CI. Needs ``aeon`` (``pip install -e ".[bench]"`` or ``pip install aeon``),
whose wheel ships GunPoint, ItalyPowerDemand and BasicMotions, so no network is used.

For each dataset the standard TRAIN/TEST split is written to NPZ (``X`` float32 (N, T, F),
``y`` strings; unequal-length collections are padded with NaN and get ``lengths``), then the
real CLI of the current Python environment runs as subprocesses, once per seed::

    python -m rnnfc_cli train train.npz --model-dir D --seed S --json --quiet [EXTRA...]
    python -m rnnfc_cli eval D test.npz --json

Nothing is tuned per dataset: the defaults are what is measured. Anything after ``--`` on this
script's command line is passed to ``train`` unchanged, to compare settings::

    python benchmarks/accuracy.py                                  # 3 datasets x seeds 0,1,2
    python benchmarks/accuracy.py --datasets ItalyPowerDemand --seeds 0
    python benchmarks/accuracy.py --json -- --cell gru --hidden 64

A Markdown table goes to stdout (``--json``: every raw result as one JSON object instead);
progress goes to stderr. The exit code is 1 if any train or eval run failed.
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
from pathlib import Path
from typing import Any

import numpy as np

RNNFC = [sys.executable, "-m", "rnnfc_cli"]
DEFAULT_DATASETS = ("GunPoint", "ItalyPowerDemand", "BasicMotions")

# Test accuracy on the standard TRAIN/TEST split, as published.
# FCN, ResNet: Ismail Fawaz et al., "Deep learning for time series classification: a review"
#   (2019), result files of github.com/hfawaz/dl-4-tsc (mean over runs).
# ROCKET: Dempster et al. (2020), result files of github.com/angus924/rocket (UCR), and
#   tsml-eval published results (UEA multivariate, BasicMotions).
PUBLISHED: dict[str, dict[str, float | None]] = {
    "FCN": {"GunPoint": 1.00, "ItalyPowerDemand": 0.963, "BasicMotions": None},
    "ResNet": {"GunPoint": 0.991, "ItalyPowerDemand": 0.962, "BasicMotions": 1.00},
    "ROCKET": {"GunPoint": 1.00, "ItalyPowerDemand": 0.970, "BasicMotions": 1.00},
}
PUBLISHED_SOURCES = {
    "FCN": "dl-4-tsc review result files (Ismail Fawaz et al. 2019)",
    "ResNet": "dl-4-tsc review result files (Ismail Fawaz et al. 2019)",
    "ROCKET": "ROCKET repository results (UCR); tsml-eval published results (BasicMotions)",
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
        default=",".join(DEFAULT_DATASETS),
        help="Comma-separated aeon classification dataset names (default: %(default)s).",
    )
    parser.add_argument(
        "--seeds", default="0,1,2", help="Comma-separated training seeds (default: %(default)s)."
    )
    parser.add_argument(
        "--json", action="store_true", help="Print all raw results as one JSON object."
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="Keep the NPZ files and model directories here (default: a temp dir, deleted).",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="Seconds allowed for each train or eval run (default: no limit).",
    )
    args = parser.parse_args(own)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.datasets or not args.seeds:
        parser.error("need at least one dataset and one seed")
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
    return out, lengths


def write_split(name: str, split: str, folder: Path) -> dict[str, Any]:
    from aeon.datasets import load_classification

    X, y = load_classification(name, split=split)
    X, lengths = to_ntf(X)
    y = np.asarray(y).astype(str)
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
    extra: list[str],
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
        *extra,
    ]
    eval_cmd = [*RNNFC, "eval", str(model_dir), test["path"], "--json"]
    record: dict[str, Any] = {"seed": seed, "ok": False}
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
        "mean_train_seconds": statistics.fmean(secs),
    }


def best_published(name: str) -> tuple[str | None, float | None]:
    scores = [(m, s[name]) for m, s in PUBLISHED.items() if s.get(name) is not None]
    if not scores:
        return None, None
    best = max(score for _, score in scores)
    return "/".join(m for m, score in scores if score == best), best


# ---------------------------------------------------------------------------------------------
# Output


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
    header = [
        "dataset",
        "n_train",
        "length",
        "channels",
        "rnnfc acc (mean ± std)",
        "min",
        "train s",
        *PUBLISHED,
        "best published",
        "gap (pts)",
    ]
    rows = [header, ["---"] * len(header)]
    for res in results:
        name = res["dataset"]
        if "error" in res:
            rows.append([name, *["—"] * 3, f"failed: {res['error']}", *["—"] * (len(header) - 5)])
            continue
        train, s = res["train_data"], res["summary"]
        lo, hi = train["length"]
        best_model, best = best_published(name)
        mean = s.get("mean_accuracy")
        acc = "failed" if mean is None else f"{mean:.3f} ± {s['std_accuracy']:.3f}"
        if s["n_failed"]:
            acc += f" ({s['n_failed']} failed)"
        gap = None if mean is None or best is None else 100 * (mean - best)
        rows.append(
            [
                name,
                str(train["n"]),
                str(lo) if lo == hi else f"{lo}-{hi}",
                str(train["channels"]),
                acc,
                fmt(s.get("min_accuracy")),
                fmt(s.get("mean_train_seconds"), ".1f"),
                *(fmt(PUBLISHED[m].get(name)) for m in PUBLISHED),
                "—" if best is None else f"{best:.3f} ({best_model})",
                fmt(gap, "+.1f"),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for r in rows:
        if r[0] == "---":
            cells = ["-" * w for w in widths]
        else:
            cells = [c.ljust(w) for c, w in zip(r, widths, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for res in results:
        for r in res.get("runs", []):
            if r["ok"]:
                lines.append(
                    f"{res['dataset']} seed {r['seed']}: test acc {r['test_accuracy']:.4f}, "
                    f"macro-F1 {r['test_macro_f1']:.4f}, train {r['train_seconds']:.1f} s, "
                    f"epochs {r['epochs_run']} (best {r['best_epoch']}, "
                    f"val acc {r['best_val_accuracy']:.3f})"
                )
            else:
                lines.append(f"{res['dataset']} seed {r['seed']}: FAILED {r['error']}")
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


# ---------------------------------------------------------------------------------------------


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
                "rnnfc train TRAIN.npz --model-dir D --seed S --json --quiet",
                *map(shlex.quote, extra),
            ]
        ),
        "eval_command": "rnnfc eval D TEST.npz --json",
        "extra_train_args": extra,
        "datasets": args.datasets,
        "seeds": args.seeds,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "published": PUBLISHED,
        "published_sources": PUBLISHED_SOURCES,
    }
    try:
        import aeon

        meta["aeon_version"] = aeon.__version__
    except ImportError:
        log("benchmarks/accuracy.py needs aeon: pip install aeon")
        return 2
    log(f"{version}; train args: {meta['train_command']}")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rnnfc-acc-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.datasets:
            res: dict[str, Any] = {"dataset": name}
            results.append(res)
            try:
                res["train_data"] = write_split(name, "train", work)
                res["test_data"] = write_split(name, "test", work)
            except Exception as exc:  # unknown name, no network, odd data: report and go on
                res["error"] = f"{type(exc).__name__}: {exc}"
                log(f"[{name}] could not load: {res['error']}")
                continue
            tr, te = res["train_data"], res["test_data"]
            log(
                f"[{name}] train {tr['n']} x {tr['length']} x {tr['channels']}, "
                f"test {te['n']}, {tr['classes']} classes"
            )
            res["runs"] = []
            for seed in args.seeds:
                model_dir = work / f"{name}_seed{seed}_model"
                log(f"[{name}] seed {seed}: training ...")
                r = run_seed(tr, te, model_dir, seed, extra, args.timeout)
                res["runs"].append(r)
                if r["ok"]:
                    log(
                        f"[{name}] seed {seed}: test acc {r['test_accuracy']:.4f} "
                        f"(train {r['train_seconds']:.1f} s, {r['epochs_run']} epochs)"
                    )
                else:
                    log(f"[{name}] seed {seed}: FAILED {r['error']}")
            res["summary"] = summarise(res["runs"])
            best_model, best = best_published(name)
            res["best_published"] = {"model": best_model, "accuracy": best}
            mean = res["summary"].get("mean_accuracy")
            res["gap_points"] = None if mean is None or best is None else 100 * (mean - best)
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
    print(f"# {version} (source {revision}), aeon {aeon.__version__}")
    if versions:
        print("# versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"# benchmark: {meta['benchmark_command']}")
    print(f"# per seed:  {meta['train_command']}; {meta['eval_command']}")
    print(f"# seeds {','.join(map(str, args.seeds))}; std is the sample std over seeds;")
    print("# train s = mean train_seconds from 'rnnfc train --json'; gap = ours - best, in points")
    print()
    print(table(results))
    print()
    for line in per_seed_lines(results):
        print(f"- {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
