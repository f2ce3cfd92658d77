"""Shared tiny datasets and one tiny trained model, so the suite stays fast on 2 cores."""

from __future__ import annotations

import csv
import os
from pathlib import Path

# Tests run tiny models: compiling them dominates the suite. XLA's backend optimisation
# (which makes large models fast, not small ones correct) doubled it; XLA:CPU's newer
# fusion emitters took twice as long as the older ones to compile a tiny train step (0.7 s
# against 1.4-1.8 s, jax 0.10): the suite took 3 min 50 s, not 4 min 40 s, on 2 cores.
# Both are off here; subprocesses inherit the flags. (XLA aborts on a flag it does not know:
# should a jaxlib drop the older emitters, the suite stops at once, saying which flag.)
# The tests marked ``xla_default`` (bf16, an ensemble, resume bit-identity, learning) run
# instead in a second pytest process with the flags as given (tests/test_xla_defaults.py),
# so that what users run is tested too.
os.environ.setdefault("RNNFC_TEST_XLA_FLAGS_AS_GIVEN", os.environ.get("XLA_FLAGS", ""))
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        ""
        if os.environ.get("RNNFC_TEST_XLA_DEFAULTS") == "1"
        else "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
    ]
).strip()

import jax
import numpy as np
import pytest

from rnnfc_cli import runtime

# Keep compiled programs in the checkout (tests/.cache, ignored by git), never the user's.
os.environ.setdefault("RNNFC_CACHE_DIR", str(Path(__file__).parent / ".cache"))

# Full float32 matmuls on accelerators too (GPUs default to TF32), so that tolerances
# written for CPU hold wherever the suite runs.
jax.config.update("jax_default_matmul_precision", "highest")
# Share compiled programs between in-process tests and the CLI subprocesses they start.
runtime.configure_jax()

TINY_MODEL = {"hidden": 8, "dense": (8,), "dropout": 0.0}
# A tiny model through the command line, quiet; the refit off (tested in test_refit.py,
# elsewhere it would double the compiles); one small conv block, not the default three
# (which compile 2 s longer on every program, where only the plumbing is under test).
TINY_FLAGS = ["--hidden", "8", "--dense", "8", "--epochs", "2", "--batch-size", "8"]
TINY_FLAGS += ["--conv", "4:3", "--refit", "off", "-q"]
XLA_FLAGS_AS_GIVEN = os.environ["RNNFC_TEST_XLA_FLAGS_AS_GIVEN"]
XLA_DEFAULTS = os.environ.get("RNNFC_TEST_XLA_DEFAULTS") == "1"


# The longest test (one to two minutes on 2 cores), started first: pytest-xdist hands out
# tests in collection order, and started last it kept one worker busy long after the other
# had run out of work.
LONGEST_FIRST = ("test_xla_defaults.py::",)


def _longest_first(item) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if prefix in item.nodeid:
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    """The longest tests first; outside the XLA-defaults run, its tests are left to it (see
    ``XLA_FLAGS_AS_GIVEN``)."""
    del config
    items.sort(key=_longest_first)  # stable: the rest keep their order
    if XLA_DEFAULTS:
        return
    skip = pytest.mark.skip(reason="runs with XLA's default flags in test_xla_defaults.py")
    for item in items:
        if "xla_default" in item.keywords:
            item.add_marker(skip)


def make_sequences(n: int = 24, seed: int = 0, features: int = 2, classes=("up", "down")):
    """Variable-length sequences whose class decides the slope. Returns (list of arrays, labels)."""
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for i in range(n):
        label = classes[i % len(classes)]
        length = int(rng.integers(4, 10))
        slope = 1.0 if label == classes[0] else -1.0
        t = np.arange(length)[:, None]
        sequences.append(
            slope * t * np.ones((1, features)) + rng.normal(0, 0.3, (length, features))
        )
        labels.append(label)
    return sequences, labels


def write_long_csv(path: Path, sequences, labels, with_label: bool = True) -> Path:
    features = sequences[0].shape[1]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        names = [f"f{j}" for j in range(features)]
        writer.writerow(["id", "time", *names, *(["label"] if with_label else [])])
        for i, (seq, label) in enumerate(zip(sequences, labels, strict=True)):
            for t, row in enumerate(seq):
                writer.writerow([f"s{i}", t, *row.tolist(), *([label] if with_label else [])])
    return path


def write_wide_csv(path: Path, sequences, labels) -> Path:
    width = max(len(s) for s in sequences)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", *(f"t{i}" for i in range(width))])
        for seq, label in zip(sequences, labels, strict=True):
            values = seq[:, 0].tolist()
            writer.writerow([label, *values, *[""] * (width - len(values))])
    return path


def padded(sequences, fill=np.nan) -> np.ndarray:
    width = max(len(s) for s in sequences)
    out = np.full((len(sequences), width, sequences[0].shape[1]), fill)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = seq
    return out


def save_random_model(model_dir, train_data, options, normalize, members) -> None:
    """A model directory written by rnnfc's own writer, holding random values in every
    parameter (running variances positive), scaling fitted to ``train_data``."""
    import uuid

    from rnnfc_cli import checkpoint, preprocessing, readers
    from rnnfc_cli.config import ModelConfig, TrainConfig
    from rnnfc_cli.inference import init_params, member_keys
    from rnnfc_cli.models import build_model

    sequences = readers.read_sequences(train_data, readers.ReadOptions())
    prep = preprocessing.fit(sequences, normalize)
    config = ModelConfig(prep.model_features, len(prep.labels), dropout=0.0, **options)
    params = init_params(build_model(config), member_keys(0, members))
    rng = np.random.default_rng(1)

    def scramble(path, leaf):
        value = np.asarray(leaf) + rng.normal(0, 0.3, np.shape(leaf)).astype(np.float32)
        return np.abs(value) + 0.5 if jax.tree_util.keystr(path).endswith("['var']") else value

    params = jax.tree_util.tree_map_with_path(scramble, params)
    with checkpoint.ModelDirWriter(model_dir, force=False) as writer:
        writer.write_settings(config, TrainConfig(ensemble=members), prep)
        writer.commit({"best_epoch": 1, "model_id": uuid.uuid4().hex}, params, best_epoch=1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """The same labelled problem as long CSV, wide CSV and NPZ, train and test."""
    root = tmp_path_factory.mktemp("data")
    train_seqs, train_labels = make_sequences(32, seed=1)
    test_seqs, test_labels = make_sequences(12, seed=2)
    np.savez(root / "train.npz", X=padded(train_seqs), y=np.array(train_labels))
    return {
        "train_long": write_long_csv(root / "train_long.csv", train_seqs, train_labels),
        "test_long": write_long_csv(root / "test_long.csv", test_seqs, test_labels),
        "train_wide": write_wide_csv(root / "train_wide.csv", train_seqs, train_labels),
        "test_wide": write_wide_csv(root / "test_wide.csv", test_seqs, test_labels),
        "train_npz": root / "train.npz",
        "root": root,
    }


@pytest.fixture(scope="session")
def trained_model(tiny_data, tmp_path_factory) -> Path:
    """A tiny model trained once for the whole session (long-CSV input, string labels)."""
    from rnnfc_cli import api
    from rnnfc_cli.config import TrainConfig

    model_dir = tmp_path_factory.mktemp("models") / "tiny"
    api.train_model(
        api.TrainRequest(
            data=str(tiny_data["train_long"]),
            model_dir=model_dir,
            model_options=TINY_MODEL,
            train=TrainConfig(epochs=3, batch_size=8, min_steps=0, val_split=0.25, refit="off"),
        )
    )
    return model_dir
