"""Large CSV files: converted once, streaming, into a memory-mapped cache that reads
exactly as the file does in memory; reused while the file is unchanged."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import make_sequences, write_long_csv, write_wide_csv

from rnnfc_cli import readers
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.lazy import LazyInputs
from rnnfc_cli.readers import csv_cache


@pytest.fixture()
def small_blocks(monkeypatch, tmp_path):
    monkeypatch.setattr(csv_cache, "BLOCK_ROWS", 7)  # many blocks, cut mid-file
    monkeypatch.setattr(csv_cache, "BLOCK_BYTES", 200)
    monkeypatch.setenv("RNNFC_CACHE_DIR", str(tmp_path / "cache"))


def _read(path, cached: bool, monkeypatch, **options):
    monkeypatch.setattr(csv_cache, "MIN_BYTES", 0 if cached else 2**62)
    return readers.read_sequences(str(path), readers.ReadOptions(**options))


@pytest.mark.parametrize("layout", ["long", "wide"])
@pytest.mark.parametrize("require_labels", [True, False])
def test_the_cache_reads_as_the_file_does(
    tmp_path, monkeypatch, small_blocks, layout, require_labels
):
    sequences, labels = make_sequences(30, seed=5, features=2)
    labels = [("1.0" if label == "up" else "2") for label in labels]  # canonical over all
    write = write_long_csv if layout == "long" else write_wide_csv
    path = write(tmp_path / "d.csv", sequences, labels)
    plain = _read(path, False, monkeypatch, require_labels=require_labels)
    cached = _read(path, True, monkeypatch, require_labels=require_labels)
    assert isinstance(cached.inputs, LazyInputs)
    np.testing.assert_array_equal(cached.inputs[:], plain.inputs)
    np.testing.assert_array_equal(cached.lengths, plain.lengths)
    assert cached.ids == plain.ids and cached.feature_names == plain.feature_names
    if require_labels:
        assert (
            cached.labels.tolist()
            == plain.labels.tolist()
            == ["1" if label == "1.0" else "2" for label in labels]
        )
    else:
        assert cached.labels is None


def test_the_cache_is_reused_until_the_file_changes(tmp_path, monkeypatch, small_blocks):
    sequences, labels = make_sequences(10, seed=6)
    path = write_long_csv(tmp_path / "d.csv", sequences, labels)
    _read(path, True, monkeypatch)
    made = sorted((tmp_path / "cache" / "csv").iterdir())
    converted = []
    real = csv_cache._convert
    monkeypatch.setattr(csv_cache, "_convert", lambda *a: converted.append(a) or real(*a))
    _read(path, True, monkeypatch)
    assert converted == [] and sorted((tmp_path / "cache" / "csv").iterdir()) == made
    os.utime(path, ns=(1, 1))  # touched: converted again
    _read(path, True, monkeypatch)
    assert len(converted) == 1


def _count_conversions(monkeypatch) -> list:
    converted = []
    real = csv_cache._convert
    monkeypatch.setattr(csv_cache, "_convert", lambda *a: converted.append(a) or real(*a))
    return converted


def _assert_same(cached, plain) -> None:
    assert isinstance(cached.inputs, LazyInputs)
    np.testing.assert_array_equal(cached.inputs[:], plain.inputs)
    np.testing.assert_array_equal(cached.lengths, plain.lengths)
    assert cached.feature_names == plain.feature_names and cached.ids == plain.ids


def test_other_reading_options_are_not_served_the_cache_of_the_first(
    tmp_path, monkeypatch, small_blocks
):
    sequences, labels = make_sequences(10, seed=11)
    path = write_long_csv(tmp_path / "d.csv", sequences, labels)
    converted = _count_conversions(monkeypatch)
    # No column "step": the time column is then a feature, so every read differs.
    for options in ({}, {"time_col": "step"}, {"time_col": "step", "require_labels": False}):
        plain = _read(path, False, monkeypatch, **options)
        _assert_same(_read(path, True, monkeypatch, **options), plain)
    assert len(converted) == 3
    assert _read(path, True, monkeypatch, time_col="step").num_features == 3
    assert len(converted) == 3  # each reused once made


def test_a_file_of_another_size_with_the_same_time_is_converted_again(
    tmp_path, monkeypatch, small_blocks
):
    sequences, labels = make_sequences(10, seed=12)
    path = write_long_csv(tmp_path / "d.csv", sequences, labels)
    _read(path, True, monkeypatch)
    mtime = path.stat().st_mtime_ns
    more, more_labels = make_sequences(11, seed=12)
    write_long_csv(path, more, more_labels)
    os.utime(path, ns=(mtime, mtime))  # size alone tells the files apart
    converted = _count_conversions(monkeypatch)
    table = _read(path, True, monkeypatch)
    assert len(converted) == 1 and len(table) == 11
    _assert_same(table, _read(path, False, monkeypatch))


def test_a_deleted_cache_is_made_again(tmp_path, monkeypatch, small_blocks):
    sequences, labels = make_sequences(10, seed=13)
    path = write_long_csv(tmp_path / "d.csv", sequences, labels)
    _read(path, True, monkeypatch)
    shutil.rmtree(tmp_path / "cache")
    converted = _count_conversions(monkeypatch)
    _assert_same(_read(path, True, monkeypatch), _read(path, False, monkeypatch))
    assert len(converted) == 1 and any((tmp_path / "cache" / "csv").iterdir())


def test_errors_name_the_row_of_the_file(tmp_path, monkeypatch, small_blocks):
    sequences, labels = make_sequences(10, seed=7)
    path = write_long_csv(tmp_path / "d.csv", sequences, labels)
    lines = path.read_text().splitlines()
    lines[40] = lines[40].replace(lines[40].split(",")[2], "oops", 1)
    path.write_text("\n".join(lines) + "\n")
    messages = []
    for cached in (False, True):
        with pytest.raises(BadInputError) as caught:
            _read(path, cached, monkeypatch)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and "row 41, column 'f0': 'oops'" in messages[0]


def test_interleaved_ids_are_read_in_memory(tmp_path, monkeypatch, small_blocks):
    path = tmp_path / "d.csv"
    path.write_text("id,x,label\na,1,u\nb,2,v\na,3,u\nb,4,v\n")
    table = _read(path, True, monkeypatch)
    assert not isinstance(table.inputs, LazyInputs)
    assert table.lengths.tolist() == [2, 2]


def test_an_unwritable_cache_falls_back_to_memory(tmp_path, monkeypatch, small_blocks):
    sequences, labels = make_sequences(6, seed=8)
    path = write_long_csv(tmp_path / "d.csv", sequences, labels)
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    table = _read(path, True, monkeypatch)
    assert not isinstance(table.inputs, LazyInputs) and len(table) == 6


def test_a_cached_long_csv_trains_and_predicts_with_columns_in_any_order(
    tmp_path, monkeypatch, small_blocks
):
    from conftest import TINY_MODEL

    from rnnfc_cli import api
    from rnnfc_cli.config import TrainConfig

    monkeypatch.setattr(csv_cache, "MIN_BYTES", 0)
    sequences, labels = make_sequences(24, seed=9, features=3)
    train = write_long_csv(tmp_path / "train.csv", sequences, labels)
    lines = train.read_text().splitlines()  # the same file with feature columns swapped
    swapped = [
        ",".join([*row[:2], row[3], row[2], *row[4:]])
        for row in (line.split(",") for line in lines)
    ]
    (tmp_path / "swapped.csv").write_text("\n".join(swapped) + "\n")
    api.train_model(
        api.TrainRequest(
            data=str(train),
            model_dir=tmp_path / "m",
            model_options=TINY_MODEL,
            train=TrainConfig(epochs=1, batch_size=8, min_steps=0, val_split=0.25, refit="off"),
        )
    )
    same = api.predict(tmp_path / "m", str(train)).proba
    np.testing.assert_array_equal(
        api.predict(tmp_path / "m", str(tmp_path / "swapped.csv")).proba, same
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_large_utf16_csv_is_cached_like_utf8(tmp_path, monkeypatch, small_blocks, encoding):
    sequences, labels = make_sequences(12, seed=10)
    path = write_long_csv(tmp_path / "d.csv", sequences, labels)
    text = path.read_text()
    wide = tmp_path / "u.csv"
    bom = "\ufeff" if encoding == "utf-16-be" else ""  # utf-16 writes its own mark
    wide.write_bytes((bom + text).encode(encoding))
    plain = _read(path, False, monkeypatch)
    cached = _read(wide, True, monkeypatch)
    assert isinstance(cached.inputs, LazyInputs)
    np.testing.assert_array_equal(cached.inputs[:], plain.inputs)
    assert cached.labels.tolist() == plain.labels.tolist()


def test_categorical_columns_are_cached_with_one_numbering_for_the_whole_file(
    tmp_path, monkeypatch, small_blocks
):
    """Blocks number their tokens each their own way; the cache numbers them over the
    file, so tokens read back as the file holds them, and a model trained on the cached
    file predicts as one trained on it in memory."""
    from conftest import TINY_FLAGS
    from typer.testing import CliRunner

    from rnnfc_cli import api
    from rnnfc_cli.cli import app

    rng = np.random.default_rng(3)
    rows = ["id,event,value,label"]
    for s in range(30):
        label = ("a", "b")[s % 2]
        events = list(rng.choice(["x", "y", "z", ""], int(rng.integers(3, 9))))
        events[int(rng.integers(len(events)))] = "buy" if label == "a" else "sell"
        rows += [f"s{s},{e},{rng.random():.3f},{label}" for e in events]
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    plain = _read(path, False, monkeypatch, categorical=("event",))
    cached = _read(path, True, monkeypatch, categorical=("event",))
    assert isinstance(cached.inputs, LazyInputs)

    def tokens(data):
        column = data.categories[0]
        return [column.texts[c] if c >= 0 else None for c in np.asarray(column.codes).ravel()]

    assert tokens(cached) == tokens(plain)
    np.testing.assert_array_equal(cached.inputs[:], plain.inputs)

    flags = ["--categorical", "event", *TINY_FLAGS]
    runner = CliRunner()
    monkeypatch.setattr(csv_cache, "MIN_BYTES", 0)
    assert (
        runner.invoke(app, ["train", str(path), "-m", str(tmp_path / "c"), *flags]).exit_code == 0
    )
    from_cache = api.predict(tmp_path / "c", str(path)).proba
    monkeypatch.setattr(csv_cache, "MIN_BYTES", 2**62)
    assert (
        runner.invoke(app, ["train", str(path), "-m", str(tmp_path / "m"), *flags]).exit_code == 0
    )
    in_memory = api.predict(tmp_path / "m", str(path)).proba
    np.testing.assert_allclose(from_cache, in_memory, atol=1e-6)


@pytest.mark.parametrize("split", ["space", "char"])
def test_a_token_column_is_cached_like_it_reads_in_memory(
    tmp_path, monkeypatch, small_blocks, split
):
    rng = np.random.default_rng(4)
    words = ["ab", "cd", "ef", "gh"] if split == "space" else list("ACGT")
    joiner = " " if split == "space" else ""
    rows = ["text,label"]
    for i in range(40):
        tokens = list(rng.choice(words, int(rng.integers(2, 12))))
        rows.append(f"{joiner.join(tokens)},{('a', 'b')[i % 2]}")
    path = tmp_path / "tokens.csv"
    path.write_text("\n".join(rows) + "\n")
    options = {"tokens": "text", "token_split": split}
    plain = _read(path, False, monkeypatch, **options)
    cached = _read(path, True, monkeypatch, **options)
    assert isinstance(cached.inputs, LazyInputs) and cached.source_format == "token-csv"
    np.testing.assert_array_equal(cached.lengths, plain.lengths)
    for ours, theirs in zip(cached.categories, plain.categories, strict=True):
        mine = np.where(ours.codes >= 0, ours.texts[np.maximum(ours.codes, 0)], "")
        expected = np.where(theirs.codes >= 0, theirs.texts[np.maximum(theirs.codes, 0)], "")
        np.testing.assert_array_equal(mine[:, : expected.shape[1]], expected)
    if split == "char":  # and a model trained from the cache predicts as one from memory
        from conftest import TINY_FLAGS
        from typer.testing import CliRunner

        from rnnfc_cli import api
        from rnnfc_cli.cli import app

        flags = ["--tokens", "text", "--token-split", "char", *TINY_FLAGS]
        answers = []
        for threshold, name in ((0, "cached"), (2**62, "memory")):
            monkeypatch.setattr(csv_cache, "MIN_BYTES", threshold)
            model = tmp_path / name
            result = CliRunner().invoke(app, ["train", str(path), "-m", str(model), *flags])
            assert result.exit_code == 0, result.stderr
            answers.append(api.predict(model, str(path)).proba)
        np.testing.assert_allclose(answers[0], answers[1], atol=1e-6)
