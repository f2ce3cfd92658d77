"""Token sequences: rnnfc's defaults against a bag-of-tokens logistic regression and fastText.

Four tasks, each a train and a test split:

- ``sessions``: ``sample_data/sessions_*.csv``, an event log (page and action per event,
  dwell seconds); the order of three pages decides the class. rnnfc reads it as it is
  (``--id-col session --categorical page,action``); the baselines read each session as a
  document of ``page:action`` tokens in order.
- ``dna``: ``sample_data/dna_*.csv``, reads of 60-100 bases; which of two motifs comes
  first decides the class. rnnfc: ``--tokens read --token-split char``; the baselines read
  the bases as tokens.
- ``count`` (synthetic): 40-word vocabulary, 20-60 tokens a sequence; the class is the
  topic (one of four groups of six words) that occurs most often, among noise words in
  random order: counting solves it, order carries nothing.
- ``order`` (synthetic): the same bag of words in every class; two marker words occur
  once each, 10-60 steps apart in sequences of 40-100 tokens; the class is which comes
  first: only order solves it.

rnnfc runs its defaults (a fresh ``rnnfc train`` process; its wall time is the training
time), with ``--seed`` 0, 1, 2. The baselines: scikit-learn's ``LogisticRegression``
(max_iter 2000) on token counts of unigrams and bigrams (``CountVectorizer``,
``ngram_range=(1, 2)``: unigrams alone cannot see a motif of bases), and fastText
supervised (``fasttext-wheel``) with word n-grams 1 and 2 (25 epochs, learning rate 0.5,
the settings of fastText's text-classification tutorial), seeds 0, 1, 2. Accuracy on the
test split, mean ± std and min over the seeds, and the median training seconds.

    python benchmarks/tokens.py                  # all four tasks, 3 seeds: about 15 minutes
    python benchmarks/tokens.py --tasks order --seeds 1
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cli_latency import _rnnfc_executable
from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"


# --- tasks: documents (token lists) and labels, and how rnnfc reads the same files -------


def _sessions(path: Path) -> tuple[list[list[str]], list[str]]:
    documents: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            documents.setdefault(row["session"], []).append(f"{row['page']}:{row['action']}")
            labels[row["session"]] = row["label"]
    return list(documents.values()), [labels[key] for key in documents]


def _token_rows(path: Path, column: str, split: Callable[[str], list[str]]):
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return [split(row[column]) for row in rows], [row["label"] for row in rows]


def _write_tokens(path: Path, documents: list[list[str]], labels: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(
            [" ".join(doc), label] for doc, label in zip(documents, labels, strict=True)
        )
    return path


def _count_task(rng: np.random.Generator, n: int) -> tuple[list[list[str]], list[str]]:
    topics = [[f"t{k}w{i}" for i in range(6)] for k in range(4)]
    noise = [f"n{i}" for i in range(16)]
    documents, labels = [], []
    for i in range(n):
        topic = i % 4
        length = int(rng.integers(20, 61))
        words = list(rng.choice(noise, length))
        # every topic appears, the labelled one most often
        counts = rng.integers(1, 4, 4)
        counts[topic] = counts.max() + int(rng.integers(1, 3))
        slots = rng.choice(length, min(length, int(counts.sum())), replace=False)
        planted = [w for k in range(4) for w in rng.choice(topics[k], counts[k])]
        for slot, word in zip(slots, rng.permutation(planted), strict=False):
            words[slot] = str(word)
        documents.append(words)
        labels.append(f"topic{topic}")
    return documents, labels


def _order_task(rng: np.random.Generator, n: int) -> tuple[list[list[str]], list[str]]:
    vocabulary = [f"w{i}" for i in range(30)]
    documents, labels = [], []
    for i in range(n):
        label = ("alpha_first", "beta_first")[i % 2]
        length = int(rng.integers(40, 101))
        words = [str(w) for w in rng.choice(vocabulary, length)]
        gap = int(rng.integers(10, min(60, length - 1)))
        first = int(rng.integers(0, length - gap))
        markers = ("alpha", "beta") if label == "alpha_first" else ("beta", "alpha")
        words[first], words[first + gap] = markers
        documents.append(words)
        labels.append(label)
    return documents, labels


def prepare(task: str, work: Path):
    """(train documents, labels), (test documents, labels), and rnnfc's files and flags."""
    if task == "sessions":
        train, test = (
            _sessions(SAMPLE / "sessions_train.csv"),
            _sessions(SAMPLE / "sessions_test.csv"),
        )
        flags = ["--id-col", "session", "--categorical", "page,action"]
        return train, test, SAMPLE / "sessions_train.csv", SAMPLE / "sessions_test.csv", flags
    if task == "dna":
        train = _token_rows(SAMPLE / "dna_train.csv", "read", list)
        test = _token_rows(SAMPLE / "dna_test.csv", "read", list)
        flags = ["--tokens", "read", "--token-split", "char"]
        return train, test, SAMPLE / "dna_train.csv", SAMPLE / "dna_test.csv", flags
    make = _count_task if task == "count" else _order_task
    rng = np.random.default_rng(20261206)
    train, test = make(rng, 1000), make(rng, 500)
    train_csv = _write_tokens(work / f"{task}_train.csv", *train)
    test_csv = _write_tokens(work / f"{task}_test.csv", *test)
    return train, test, train_csv, test_csv, ["--tokens", "text"]


# --- the three classifiers ------------------------------------------------------------------


def run_rnnfc(rnnfc: str, train_csv, test_csv, flags, seed: int, work: Path) -> tuple[float, float]:
    model = work / f"model-{seed}"
    command = [
        rnnfc,
        "train",
        str(train_csv),
        "-m",
        str(model),
        "--force",
        "-q",
        "--seed",
        str(seed),
    ]
    started = time.perf_counter()
    subprocess.run([*command, *flags], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    scored = subprocess.run(  # eval reads the columns and tokens the model was trained on
        [rnnfc, "eval", str(model), str(test_csv), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(scored.stdout)["accuracy"], seconds


def run_logistic(train, test, seed: int) -> tuple[float, float]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(
        analyzer=lambda doc: doc + [f"{a} {b}" for a, b in itertools.pairwise(doc)]
    )
    started = time.perf_counter()
    features = vectorizer.fit_transform(train[0])
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(features, train[1])
    seconds = time.perf_counter() - started
    return float(
        (model.predict(vectorizer.transform(test[0])) == np.array(test[1])).mean()
    ), seconds


def run_fasttext(train, test, seed: int, work: Path) -> tuple[float, float]:
    import fasttext

    path = work / "fasttext_train.txt"
    path.write_text(
        "".join(f"__label__{y} {' '.join(doc)}\n" for doc, y in zip(*train, strict=True))
    )
    started = time.perf_counter()
    model = fasttext.train_supervised(
        str(path), wordNgrams=2, epoch=25, lr=0.5, seed=seed, thread=1, verbose=0
    )
    seconds = time.perf_counter() - started
    predicted, _ = model.predict([" ".join(doc) for doc in test[0]])
    labels = [p[0].removeprefix("__label__") for p in predicted]
    return float((np.array(labels) == np.array(test[1])).mean()), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sessions,dna,count,order")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    rnnfc = _rnnfc_executable()
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="rnnfc-tokens-") as work:
        work = Path(work)
        for task in args.tasks.split(","):
            train, test, train_csv, test_csv, flags = prepare(task, work)
            runs: dict[str, list[tuple[float, float]]] = {
                "rnnfc": [],
                "logistic": [],
                "fastText": [],
            }
            for seed in range(args.seeds):
                runs["rnnfc"].append(run_rnnfc(rnnfc, train_csv, test_csv, flags, seed, work))
                runs["logistic"].append(run_logistic(train, test, seed))
                runs["fastText"].append(run_fasttext(train, test, seed, work))
                print(
                    f"{task} seed {seed}: "
                    + ", ".join(f"{k} {v[-1][0]:.3f} ({v[-1][1]:.1f} s)" for k, v in runs.items()),
                    flush=True,
                )
            results[task] = runs
    print()
    print(f"{'task':<10} {'method':<9} {'accuracy mean ± std':>20} {'min':>6} {'train s':>8}")
    for task, runs in results.items():
        for method, values in runs.items():
            accuracy = np.array([a for a, _ in values])
            seconds = statistics.median(s for _, s in values)
            print(
                f"{task:<10} {method:<9} {accuracy.mean():>13.3f} ± {accuracy.std():.3f} "
                f"{accuracy.min():>6.3f} {seconds:>8.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
