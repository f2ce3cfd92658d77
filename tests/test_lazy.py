"""Data kept on disk (a memory-mapped .npy) reads, trains and predicts exactly as the same
data in memory, and is checked block by block with the right row numbers."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
from conftest import TINY_MODEL, make_sequences, padded

from rnnfc_cli import api, preprocessing, readers
from rnnfc_cli.config import TrainConfig
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.lazy import LazyInputs
from rnnfc_cli.readers import numpy as numpy_reader


@pytest.fixture()
def npy_pair(tmp_path):
    sequences, labels = make_sequences(40, seed=3, features=3)
    np.save(tmp_path / "x.npy", padded(sequences).astype(np.float32))
    (tmp_path / "y.txt").write_text("\n".join(labels) + "\n")
    return tmp_path / "x.npy", tmp_path / "y.txt"


def _read(path, labels, lazy: bool, monkeypatch):
    monkeypatch.setattr(numpy_reader, "LAZY_MIN_BYTES", 0 if lazy else 2**62)
    monkeypatch.setattr(numpy_reader, "CHUNK_ROWS", 7)  # several blocks, one of them partial
    return readers.read_sequences(str(path), readers.ReadOptions(labels_file=str(labels)))


def test_a_memory_mapped_npy_reads_as_in_memory(npy_pair, monkeypatch):
    eager = _read(*npy_pair, lazy=False, monkeypatch=monkeypatch)
    lazy = _read(*npy_pair, lazy=True, monkeypatch=monkeypatch)
    assert isinstance(lazy.inputs, LazyInputs) and isinstance(lazy.inputs.raw.base, mmap.mmap)
    np.testing.assert_array_equal(lazy.lengths, eager.lengths)
    np.testing.assert_array_equal(lazy.inputs[:], eager.inputs)
    index = np.array([5, 0, 33, 5])
    np.testing.assert_array_equal(lazy.subset(index).inputs[:], eager.subset(index).inputs)
    for normalize in ("feature", "sequence+scale"):  # the second yields more than it reads
        prep = preprocessing.fit(eager, normalize)
        scaled = preprocessing.transform_inputs(prep, lazy)
        assert scaled.shape == (40, eager.inputs.shape[1], prep.model_features)
        np.testing.assert_array_equal(
            scaled[index], preprocessing.transform_inputs(prep, eager)[index]
        )


@pytest.mark.parametrize(
    ("damage", "expected"),
    [((15, 1, 2), "X[15, 1, 2] is nan inside"), ((22, slice(None)), "X[22] is all NaN")],
)
def test_blocks_report_the_row_of_the_file(tmp_path, npy_pair, monkeypatch, damage, expected):
    x = np.load(npy_pair[0])
    x[damage] = np.nan
    np.save(npy_pair[0], x)
    for lazy in (False, True):
        with pytest.raises(BadInputError, match=expected.replace("[", r"\[")):
            _read(*npy_pair, lazy=lazy, monkeypatch=monkeypatch)


def test_block_moments_match_numpy():
    sequences, _ = make_sequences(50, seed=4, features=2)
    sequences = [s * 1e3 + 1e6 for s in sequences]  # a large offset: no cancellation
    stacked = np.concatenate(sequences)
    inputs = np.nan_to_num(padded(sequences))
    lengths = np.array([len(s) for s in sequences])
    table = readers.SequenceData(inputs, lengths, None, list(range(50)), None, "npy", "x")
    mean, std = preprocessing.feature_moments(table, rows=6)
    np.testing.assert_allclose(mean, stacked.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, stacked.std(axis=0), rtol=1e-9)


def test_training_from_disk_gives_the_same_model(npy_pair, tmp_path, monkeypatch):
    results = []
    for lazy in (False, True):
        monkeypatch.setattr(numpy_reader, "LAZY_MIN_BYTES", 0 if lazy else 2**62)
        model_dir = tmp_path / f"m{lazy}"
        request = api.TrainRequest(
            data=str(npy_pair[0]),
            model_dir=model_dir,
            model_options=TINY_MODEL,
            train=TrainConfig(epochs=3, batch_size=8, min_steps=0, val_split=0.25, refit="off"),
            read=readers.ReadOptions(labels_file=str(npy_pair[1])),
        )
        summary = api.train_model(request)
        proba = api.predict(model_dir, str(npy_pair[0])).proba
        results.append((summary["best_val_loss"], summary["steps"], proba))
    (loss_a, steps_a, proba_a), (loss_b, steps_b, proba_b) = results
    assert (loss_a, steps_a) == (loss_b, steps_b)
    np.testing.assert_array_equal(proba_a, proba_b)


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_predict_in_chunks_writes_what_one_chunk_would(
    npy_pair, trained_npy_model, monkeypatch, capsys, output_format
):
    from rnnfc_cli.cli import main

    argv = ["predict", str(trained_npy_model), str(npy_pair[0]), "--proba"]
    argv += ["--format", output_format, "--batch-size", "4"]
    outputs = []
    for chunk_bytes, lazy in ((2**40, False), (1, True)):  # one chunk; one batch per chunk
        monkeypatch.setattr(api, "PREDICT_CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(numpy_reader, "LAZY_MIN_BYTES", 0 if lazy else 2**62)
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 40 + (output_format == "csv")


@pytest.fixture()
def trained_npy_model(npy_pair, tmp_path):
    model_dir = tmp_path / "npy-model"
    api.train_model(
        api.TrainRequest(
            data=str(npy_pair[0]),
            model_dir=model_dir,
            model_options=TINY_MODEL,
            train=TrainConfig(epochs=1, batch_size=8, min_steps=0, val_split=0.25, refit="off"),
            read=readers.ReadOptions(labels_file=str(npy_pair[1])),
        )
    )
    return model_dir
