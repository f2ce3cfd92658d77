"""Readers: every format gives the same arrays, and every bad input a one-line, placed error."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_sequences, padded, write_long_csv, write_wide_csv

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers import ReadOptions, canonical_labels, read_sequences, sorted_vocabulary


def _assert_same_sequences(data, sequences, labels):
    assert len(data) == len(sequences)
    np.testing.assert_array_equal(data.lengths, [len(s) for s in sequences])
    for i, seq in enumerate(sequences):
        np.testing.assert_allclose(data.inputs[i, : len(seq)], seq)
        assert not data.inputs[i, len(seq) :].any(), "padding must be zero"
    assert data.labels.tolist() == labels


def test_long_csv_groups_rows_by_id_in_first_appearance_order(tmp_path):
    sequences, labels = make_sequences(6, features=3)
    data = read_sequences(str(write_long_csv(tmp_path / "a.csv", sequences, labels)))
    _assert_same_sequences(data, sequences, labels)
    assert data.ids == [f"s{i}" for i in range(6)]
    assert data.feature_names == ("f0", "f1", "f2")
    assert data.source_format == "long-csv"


def test_long_csv_sorts_by_time_column_and_keeps_file_order_without_it(tmp_path):
    (tmp_path / "t.csv").write_text("id,time,x,label\nb,2,20,k\na,1,1,j\nb,1,10,k\na,0,0,j\n")
    data = read_sequences(str(tmp_path / "t.csv"))
    assert data.ids == ["b", "a"]
    np.testing.assert_array_equal(data.inputs[:, :, 0], [[10, 20], [0, 1]])
    (tmp_path / "n.csv").write_text("id,x,label\nb,20,k\na,1,j\nb,10,k\n")
    data = read_sequences(str(tmp_path / "n.csv"))
    np.testing.assert_array_equal(data.inputs[0, :, 0], [20, 10])
    assert data.lengths.tolist() == [2, 1]


def test_wide_csv_trailing_empty_cells_make_variable_length(tmp_path):
    sequences, labels = make_sequences(5, features=1)
    data = read_sequences(str(write_wide_csv(tmp_path / "w.csv", sequences, labels)))
    _assert_same_sequences(data, sequences, labels)
    assert data.ids == list(range(5))
    assert data.source_format == "wide-csv"


def test_npz_without_lengths_treats_trailing_all_nan_steps_as_padding(tmp_path):
    sequences, labels = make_sequences(5, features=2)
    np.savez(tmp_path / "d.npz", X=padded(sequences), y=np.array(labels))
    _assert_same_sequences(read_sequences(str(tmp_path / "d.npz")), sequences, labels)


def test_npz_with_lengths_and_integer_labels(tmp_path):
    sequences, _ = make_sequences(4, features=2)
    lengths = np.array([len(s) for s in sequences])
    np.savez(
        tmp_path / "d.npz", X=padded(sequences, 0.0), y=np.array([3, 10, 3, 10]), lengths=lengths
    )
    data = read_sequences(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(data.lengths, lengths)
    assert data.labels.tolist() == ["3", "10", "3", "10"]
    assert sorted_vocabulary(data.labels) == ("3", "10")


def test_npy_with_labels_file_text_or_npy(tmp_path):
    sequences, labels = make_sequences(4, features=1)
    np.save(tmp_path / "x.npy", padded(sequences)[:, :, 0])
    (tmp_path / "y.txt").write_text("\n".join(labels) + "\n")
    np.save(tmp_path / "y.npy", np.array(labels))
    for labels_file in ("y.txt", "y.npy"):
        options = ReadOptions(labels_file=str(tmp_path / labels_file))
        _assert_same_sequences(read_sequences(str(tmp_path / "x.npy"), options), sequences, labels)


def test_predict_reads_npy_alone_and_ignores_a_label_column(tmp_path):
    sequences, labels = make_sequences(3, features=1)
    np.save(tmp_path / "x.npy", padded(sequences))
    options = ReadOptions(require_labels=False)
    assert read_sequences(str(tmp_path / "x.npy"), options).labels is None
    path = write_wide_csv(tmp_path / "w.csv", sequences, labels)
    data = read_sequences(str(path), options)
    assert data.labels is None and data.inputs.shape[2] == 1


def test_stdin_reads_csv(monkeypatch, tmp_path):
    sequences, labels = make_sequences(4, features=2)
    raw = write_long_csv(tmp_path / "a.csv", sequences, labels).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    _assert_same_sequences(read_sequences("-"), sequences, labels)


def test_cells_and_rows_of_spaces_read_as_empty_and_blank(tmp_path):
    """pyarrow refuses a cell of spaces in a number column and a row of spaces; the file
    reads as the csv module reads it: an empty cell, a skipped row."""
    (tmp_path / "s.csv").write_bytes(b"label,t0,t1\na,1,  \n   \nb,3,4\n")
    data = read_sequences(str(tmp_path / "s.csv"))
    assert data.lengths.tolist() == [1, 2] and data.labels.tolist() == ["a", "b"]
    np.testing.assert_array_equal(data.inputs[:, :, 0], [[1, 0], [3, 4]])


def test_reading_a_csv_imports_pyarrow_but_not_pandas(tmp_path):
    """pyarrow's conversions to NumPy import pandas (0.2 s); the reader avoids them."""
    sequences, labels = make_sequences(4, features=2)
    path = write_long_csv(tmp_path / "a.csv", sequences, labels)
    code = (
        "import sys; from rnnfc_cli.readers import read_sequences; "
        f"read_sequences({str(path)!r}); "
        "assert 'pyarrow' in sys.modules and 'pandas' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_bom_and_crlf_are_read_not_refused(tmp_path):
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbflabel,t0,t1\r\na,1,2\r\nb,3,\r\n")
    data = read_sequences(str(tmp_path / "b.csv"))
    assert data.labels.tolist() == ["a", "b"]
    assert data.lengths.tolist() == [2, 1]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (np.array([1, 2]), ["1", "2"]),
        (np.array([1.0, 2.0]), ["1", "2"]),
        (np.array(["1", "1.0", " 2 "]), ["1", "1", "2"]),
        (np.array(["cat", "1"]), ["cat", "1"]),
        (np.array([True, False]), ["1", "0"]),
    ],
)
def test_canonical_labels(raw, expected):
    assert canonical_labels(raw).tolist() == expected


BAD_CSV = [
    ("empty.csv", b"", "is empty"),
    ("header.csv", b"label,t0,t1\n", "no data rows"),
    ("nolabel.csv", b"x,t0\n1,2\n", "no label column 'label'"),
    ("text.csv", b"label,t0,t1\na,1,oops\n", "row 2, column 't1': 'oops' is not a number"),
    ("gap.csv", b"label,t0,t1,t2\na,1,,3\n", "row 2, column 't1': empty cell inside"),
    ("nan.csv", b"label,t0,t1\na,1,nan\n", "row 2, column 't1': nan is not a finite"),
    ("inf.csv", b"id,x,label\na,inf,k\n", "row 2, column 'x': inf is not a finite"),
    ("ragged.csv", b"label,t0,t1\na,1,2\nb,1\n", "row 3: has 2 fields"),
    ("novalue.csv", b"label,t0\na,\n", "row 2: has no values"),
    ("dup.csv", b"label,t0,t0\na,1,2\n", "column name 't0' appears twice"),
    ("blank.csv", b"label,,t1\na,1,2\n", "column 2 has a blank name"),
    ("change.csv", b"id,x,label\na,1,k\na,2,j\n", "row 3, column 'label': label 'j' differs"),
    ("nolab.csv", b"label,t0\n,1\n", "row 2, column 'label': empty label"),
    ("latin1.csv", "label,t0\ncafé,1\n".encode("latin-1"), "row 2: not UTF-8"),
    ("missing.csv", b"id,x,label\na,,k\n", "row 2, column 'x': empty cell"),
    ("gzip.csv", gzip.compress(b"label,t0\na,1\n"), "gzip-compressed"),
    ("onlyid.csv", b"id,label\na,k\n", "no feature columns"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), BAD_CSV, ids=[b[0] for b in BAD_CSV])
def test_bad_csv_names_file_and_place(tmp_path, name, raw, expected):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(BadInputError) as caught:
        read_sequences(str(path))
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected in message
    assert "\n" not in message


def _npz(tmp_path, **arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    return str(tmp_path / "d.npz")


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"y": np.array([1])}, "no key 'X'"),
        ({"X": np.ones((2, 3))}, "no key 'y'"),
        ({"X": np.ones((2, 3)), "y": np.array([1, 2, 3])}, "X holds 2 sequences but key 'y'"),
        ({"X": np.ones(3), "y": np.array([1])}, "expected (N, T) or (N, T, F)"),
        ({"X": np.array([[1, np.nan, 2]]), "y": np.array([1])}, "X[0, 1, 0] is nan inside"),
        ({"X": np.array([[np.nan, np.nan]]), "y": np.array([1])}, "X[0] is all NaN"),
        ({"X": np.ones((2, 3)), "y": np.array([0.5, 1])}, "must be integers or strings"),
        ({"X": np.ones((2, 3)), "y": np.array([0, 1]), "lengths": np.array([1, 4])}, "lengths[1]"),
        ({"X": np.array([["a"]]), "y": np.array([1])}, "expected numbers"),
    ],
)
def test_bad_npz_names_the_key(tmp_path, arrays, expected):
    with pytest.raises(BadInputError) as caught:
        read_sequences(_npz(tmp_path, **arrays))
    assert expected in str(caught.value)


def test_pickled_npy_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="pickled"):
        read_sequences(str(tmp_path / "o.npy"), ReadOptions(require_labels=False))


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("nofile.csv", ReadOptions(), "no such file"),
        ("data.parquet", ReadOptions(), "unknown format '.parquet'"),
        ("x.npy", ReadOptions(), "--labels"),
    ],
)
def test_file_level_errors(tmp_path, name, options, expected):
    path = tmp_path / name
    if name != "nofile.csv":
        if name.endswith(".npy"):
            np.save(path, np.ones((2, 3)))
        else:
            path.write_text("a")
    with pytest.raises(BadInputError) as caught:
        read_sequences(str(path), options)
    assert expected in str(caught.value)
