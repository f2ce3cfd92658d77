"""Fuzzing the readers: any bytes give data or a clean BadInputError, never another exception;
any well-formed table round-trips."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers import ReadOptions, read_sequences

CELL = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1e309", "1.5", "0", "x", '"', "\r", ",", "1,2"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=4),
)
# A bounded run here; RNNFC_FUZZ_EXAMPLES=20000 runs the long one the README reports.
_FUZZ = settings(
    max_examples=int(os.environ.get("RNNFC_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _read(raw: bytes, suffix: str, require_labels: bool = True):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(raw)
        try:
            return read_sequences(str(path), ReadOptions(require_labels=require_labels))
        except BadInputError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            return None


@_FUZZ
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".npy", ".npz", ""]))
def test_any_bytes_give_data_or_a_clean_error(raw, suffix):
    _read(raw, suffix)


@_FUZZ
@given(
    header=st.lists(st.sampled_from(["id", "time", "label", "x", "y", "", "t0"]), max_size=5),
    rows=st.lists(st.lists(CELL, max_size=6), max_size=6),
    require_labels=st.booleans(),
)
def test_any_csv_table_gives_data_or_a_clean_error(header, rows, require_labels):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    data = _read(buffer.getvalue().encode(), ".csv", require_labels)
    if data is not None:
        assert np.isfinite(data.inputs).all()
        assert (data.lengths >= 1).all() and (data.lengths <= data.inputs.shape[1]).all()


def _outcome(raw: bytes, require_labels: bool):
    """What reading ``raw`` as a CSV gives: the arrays, or the error message."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.csv"
        path.write_bytes(raw)
        try:
            data = read_sequences(str(path), ReadOptions(require_labels=require_labels))
        except BadInputError as err:
            return str(err).replace(str(path), "FILE")
    labels = None if data.labels is None else data.labels.tolist()
    return data.inputs.tolist(), data.lengths.tolist(), labels, data.ids, data.feature_names


@_FUZZ
@given(
    header=st.lists(st.sampled_from(["id", "time", "label", "x", "y", "t0"]), max_size=5),
    rows=st.lists(st.lists(CELL, max_size=6), max_size=6),
    require_labels=st.booleans(),
)
def test_pyarrow_and_the_python_csv_module_read_alike(header, rows, require_labels):
    """Where pyarrow parses a file, the Python csv module (the path for what pyarrow
    refuses) gives the same data, or the same error message."""
    import pyarrow as pa

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    raw = buffer.getvalue().encode()
    fast = _outcome(raw, require_labels)
    refuse = mock.patch("pyarrow.csv.read_csv", side_effect=pa.ArrowInvalid("refused"))
    with refuse:
        slow = _outcome(raw, require_labels)
    assert fast == slow


@_FUZZ
@given(
    sequences=st.lists(
        st.lists(
            st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=2, max_size=2),
            min_size=1,
            max_size=7,
        ),
        min_size=1,
        max_size=8,
    ),
    labels=st.lists(st.sampled_from(["a", "b", "7", "-3"]), min_size=8, max_size=8),
)
def test_every_format_round_trips(sequences, labels):
    """The same sequences (two features per step) written as long CSV, NPZ and NPY with a
    labels file read back as the same values, lengths and labels. Wide CSV holds one
    feature, so it round-trips the first."""
    labels = labels[: len(sequences)]
    arrays = [np.array(seq, dtype=np.float32).astype(np.float64) for seq in sequences]
    width = max(len(a) for a in arrays)
    padded = np.full((len(arrays), width, 2), np.nan)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a
    long_csv, wide_csv = io.StringIO(), io.StringIO()
    writer = csv.writer(long_csv)
    writer.writerow(["id", "time", "f0", "f1", "label"])
    for i, (a, label) in enumerate(zip(arrays, labels, strict=True)):
        rows = a.tolist()  # Python floats: repr writes them exactly
        writer.writerows([f"s{i}", t, repr(x), repr(y), label] for t, (x, y) in enumerate(rows))
    writer = csv.writer(wide_csv)
    writer.writerow(["label", *(f"t{i}" for i in range(width))])
    for a, label in zip(arrays, labels, strict=True):
        writer.writerow([label, *map(repr, a[:, 0].tolist()), *[""] * (width - len(a))])
    npz = io.BytesIO()
    np.savez(npz, X=padded, y=np.array(labels))
    npy = io.BytesIO()
    np.save(npy, padded)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "y.txt").write_text("\n".join(labels) + "\n")
        npy_options = ReadOptions(labels_file=str(Path(tmp) / "y.txt"))
        (Path(tmp) / "x.npy").write_bytes(npy.getvalue())
        from_npy = read_sequences(str(Path(tmp) / "x.npy"), npy_options)
        read = [
            (_read(long_csv.getvalue().encode(), ".csv"), 2),
            (_read(npz.getvalue(), ".npz"), 2),
            (from_npy, 2),
            (_read(wide_csv.getvalue().encode(), ".csv"), 1),
        ]
    for data, features in read:
        assert data is not None
        assert data.lengths.tolist() == [len(a) for a in arrays]
        assert data.labels.tolist() == labels
        for i, a in enumerate(arrays):
            np.testing.assert_array_equal(data.inputs[i, : len(a)], a[:, :features])


def _valid_numpy_file(suffix: str, rng: np.random.Generator) -> bytes:
    x = rng.normal(size=(3, 4, 2)).astype(rng.choice(["<f4", "<f8", ">f4"]))
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, x)
    else:
        np.savez(buffer, X=x, y=np.array(["a", "b", "a"]), lengths=np.array([4, 2, 1]))
    return buffer.getvalue()


@_FUZZ
@given(
    suffix=st.sampled_from([".npy", ".npz"]),
    seed=st.integers(0, 2**16),
    edits=st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10**4)),
)
def test_mutated_numpy_files_give_data_or_a_clean_error(suffix, seed, edits, cut):
    """Valid files with bytes overwritten (headers included) or cut short."""
    raw = bytearray(_valid_numpy_file(suffix, np.random.default_rng(seed)))
    for position, value in edits:
        raw[position % len(raw)] = value
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    _read(bytes(raw), suffix, require_labels=suffix == ".npz")
