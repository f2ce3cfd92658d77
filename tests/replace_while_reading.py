"""Replace a model directory over and over while other processes read it.

A writer process publishes saved models in turn into one model directory, as
``rnnfc train --force`` does (``staging.publish``, half of the time by the two renames
used where directories cannot be swapped in one step). Meanwhile reader processes call
``predict``, ``evaluate`` and ``describe`` on it in a loop, as ``rnnfc predict``, ``eval``
and ``info`` do. Every answer must come wholly from one of the versions: the same labels,
probabilities, metrics and description as that version gives when nothing replaces it.

    python tests/replace_while_reading.py --swaps 2000 --readers 3  # the README's figures
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
KINDS = ("predict", "eval", "info")


def answer(kind: str, model_dir: Path, data: Path) -> object:
    """What the reading command ``kind`` answers for the model now in ``model_dir``."""
    from rnnfc_cli import api

    if kind == "predict":
        predictions = api.predict(model_dir, str(data))
        return {"labels": predictions.labels, "proba": predictions.proba.tolist()}
    if kind == "eval":
        report, classes = api.evaluate(model_dir, str(data))
        return report.to_dict(classes)
    description = api.describe(model_dir)
    del description["model_dir"]  # the path read, the same for every version
    del description["summary"]["model_id"]  # fresh in every published copy (see _write)
    return description


def _same(answer, expected) -> bool:
    if isinstance(answer, dict) and "proba" in answer:
        got, want = np.asarray(answer["proba"]), np.asarray(expected["proba"])
        return (
            answer["labels"] == expected["labels"]
            and got.shape == want.shape
            and np.allclose(got, want, rtol=0, atol=1e-6)
        )
    return json.dumps(answer, sort_keys=True) == json.dumps(expected, sort_keys=True)


def run(versions: list[Path], data: Path, workdir: Path, swaps: int, readers: int) -> dict:
    """Returns the counts of swaps, answers, answers matching each version, and errors."""
    expected = [{kind: answer(kind, version, data) for kind in KINDS} for version in versions]
    model_dir = workdir / "model"
    shutil.copytree(versions[0], model_dir)
    stop = workdir / "stop"
    outputs = [workdir / f"reader-{i}.jsonl" for i in range(readers)]
    script = [sys.executable, str(HERE)]
    reading = [
        subprocess.Popen([*script, "read", str(model_dir), str(data), str(out), str(stop)])
        for out in outputs
    ]
    started = time.monotonic()
    while not all(out.exists() and out.stat().st_size for out in outputs):
        if any(process.poll() is not None for process in reading) or time.monotonic() > (
            started + 120
        ):
            raise SystemExit("a reader did not start")
        time.sleep(0.05)
    command = [*script, "write", str(model_dir), str(swaps), *map(str, versions)]
    writer = subprocess.run(command, capture_output=True, text=True)
    stop.touch()
    for process in reading:
        process.wait()
    if writer.returncode != 0:
        raise SystemExit(f"the writer failed: {writer.stderr[-2000:]}")
    counts = {"swaps": swaps, "answers": 0, "errors": 0, "torn": 0}
    counts.update({f"version_{i}": 0 for i in range(len(versions))})
    examples = []
    for out in outputs:
        for line in out.read_text().splitlines():
            record = json.loads(line)
            counts["answers"] += 1
            if "error" in record:
                counts["errors"] += 1
                examples.append(record["error"])
                continue
            kind = record["kind"]
            match = [i for i, e in enumerate(expected) if _same(record["answer"], e[kind])]
            if match:
                counts[f"version_{match[0]}"] += 1
            else:
                counts["torn"] += 1
                examples.append(f"{kind}: matches no version")
    counts["leftovers"] = sorted(p.name for p in workdir.iterdir() if p.name.startswith(".model"))
    counts["examples"] = examples[:5]
    return counts


def _write(model_dir: Path, swaps: int, versions: list[Path]) -> None:
    from rnnfc_cli import staging

    exchange = staging._exchange
    for i in range(swaps):
        built = staging.staging_dir(model_dir)
        shutil.copytree(versions[(i + 1) % len(versions)], built)
        # A fresh model id, as every training writes: readers tell versions apart by it,
        # and the same id coming back three swaps later would fool them (A, B, C, A).
        summary = json.loads((built / "summary.json").read_text())
        summary["model_id"] = f"swap-{i}"
        (built / "summary.json").write_text(json.dumps(summary))
        # Every other swap takes the two renames used where one atomic swap is impossible.
        staging._exchange = exchange if i % 2 else lambda first, second: False
        staging.publish(built, model_dir)


def _read(model_dir: Path, data: Path, out: Path, stop: Path) -> None:
    with out.open("w") as handle:
        i = 0
        while not stop.exists():
            kind = KINDS[i % len(KINDS)]
            try:
                record = {"kind": kind, "answer": answer(kind, model_dir, data)}
            except Exception as err:  # every failure is counted, none may happen
                record = {"kind": kind, "error": f"{type(err).__name__}: {err}"}
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            i += 1


def make_versions(workdir: Path) -> tuple[list[Path], Path]:
    """Three small models that differ in shapes, label vocabulary and scaling (random
    parameters, saved by rnnfc's writer), and a labelled file all of them can score."""
    sys.path.insert(0, str(HERE.parent))
    from conftest import make_sequences, padded, save_random_model

    test, labels = make_sequences(12, seed=2)
    data = workdir / "test.npz"
    np.savez(data, X=padded(test), y=np.array(labels))
    variants = [
        ({"hidden": 8}, ("up", "down"), 1.0),
        ({"hidden": 12}, ("up", "down", "flat"), 1.0),
        ({"hidden": 8}, ("up", "down"), 10.0),
    ]
    versions = []
    for i, (options, classes, scale) in enumerate(variants):
        sequences, train_labels = make_sequences(24, seed=1, classes=classes)
        source = workdir / f"train-{i}.npz"
        np.savez(source, X=padded(sequences) * scale, y=np.array(train_labels))
        version = workdir / f"version-{i}"
        save_random_model(version, str(source), {**options, "dense": (8,)}, "feature", 1)
        versions.append(version)
    return versions, data


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "write":
        model_dir, swaps, *versions = sys.argv[2:]
        _write(Path(model_dir), int(swaps), [Path(v) for v in versions])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "read":
        _read(*(Path(arg) for arg in sys.argv[2:6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=2000)
    parser.add_argument("--readers", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rnnfc-replace-"))
    try:
        versions, data = make_versions(workdir)
        started = time.perf_counter()
        result = run(versions, data, workdir, args.swaps, args.readers)
        result["seconds"] = round(time.perf_counter() - started, 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if result["errors"] or result["torn"]:
        raise SystemExit("a reader saw an error or a torn model")


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
