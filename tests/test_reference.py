"""``predict --proba`` against an independent NumPy forward pass of the saved model.

Each case saves a tiny model with random parameters through rnnfc's model-directory writer
(the parameters only need to be what the model directory holds, not good) and compares the
command's probabilities with ``tests/reference.py``, on sequences whose padding holds large
garbage values.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_sequences, padded, save_random_model
from reference import predict_proba
from typer.testing import CliRunner

from rnnfc_cli.cli import app

CASES = {
    "lstm-bidirectional-2-layers-norm-patch3": (
        {"cell": "lstm", "hidden": 6, "layers": 2, "bidirectional": True, "layer_norm": True},
        {"pool": "last,mean", "patch": 3, "dense": (8,)},
        "feature",
        1,
    ),
    "gru-attention-two-dense": (
        {"cell": "gru", "hidden": 5, "layers": 1, "bidirectional": False},
        {"pool": "attention,last", "patch": 1, "dense": (8, 6)},
        "sequence",
        1,
    ),
    "conv-downsample-skip-bigru": (
        {"cell": "gru", "hidden": 5, "layers": 1, "bidirectional": True},
        # averaged by 2 between the blocks, max-pooled by 3 after them
        {"pool": "last,max", "dense": (8,), "conv": "6:4,5:3", "downsample": 6, "block_pool": 2},
        "sequence+scale",
        1,
    ),
    "conv-no-skip-patch2-lstm": (
        {"cell": "lstm", "hidden": 4, "layers": 1, "bidirectional": False},
        {"pool": "mean", "patch": 2, "dense": (6,), "conv": "5:2", "downsample": 1, "skip": False},
        "feature",
        1,
    ),
    "conv-only-ensemble": (
        {"cell": "lstm", "hidden": 4, "layers": 0, "bidirectional": True},
        # the maximum between the blocks, as models saved before the mean existed
        {
            "pool": "last",
            "dense": (6,),
            "conv": "6:5,4:1",
            "downsample": 2,
            "block_pool": 2,
            "block_pooling": "max",
        },
        "feature",
        2,
    ),
    "rnn-bidirectional-ensemble-patch2": (
        {"cell": "rnn", "hidden": 4, "layers": 1, "bidirectional": True},
        {"pool": "max", "patch": 2, "dense": ()},
        "none",
        2,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_predict_equals_the_numpy_reference(case, tmp_path):
    recurrent, head, normalize, members = CASES[case]
    train_seqs, train_labels = make_sequences(24, seed=3, features=3, classes=("a", "b", "c"))
    train_data = _write_npz(tmp_path / "train.npz", train_seqs, train_labels)
    save_random_model(tmp_path / "m", train_data, {**recurrent, **head}, normalize, members)
    test_seqs, _ = make_sequences(10, seed=4, features=3)
    rng = np.random.default_rng(0)
    inputs = padded(test_seqs, fill=0.0)
    lengths = np.array([len(s) for s in test_seqs])
    beyond = np.arange(inputs.shape[1])[None, :, None] >= lengths[:, None, None]
    inputs = np.where(beyond, rng.normal(0, 1e3, inputs.shape), inputs)  # garbage padding
    path = tmp_path / "test.npz"
    np.savez(path, X=inputs, lengths=lengths)

    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "m"), str(path), "--proba", "--format", "jsonl"]
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    classes = list(records[0]["probs"])
    assert classes == ["a", "b", "c"]
    got = np.array([[r["probs"][c] for c in classes] for r in records])
    expected = predict_proba(tmp_path / "m", inputs, lengths)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["label"] for r in records] == [classes[i] for i in expected.argmax(axis=1)]
    assert expected.std(axis=0).max() > 1e-3  # the sequences are told apart, not a constant


def _write_npz(path, sequences, labels) -> str:
    np.savez(path, X=padded(sequences), y=np.array(labels))
    return str(path)
