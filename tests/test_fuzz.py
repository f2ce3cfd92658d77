"""Fuzzing the readers: any bytes give data or a clean BadInputError, never another exception;
any well-formed table round-trips."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnfc_cli.data import ReadOptions, read_sequences
from rnnfc_cli.errors import BadInputError

CELL = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1e309", "1.5", "0", "x", '"', "\r", ",", "1,2"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=4),
)
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


@_FUZZ
@given(
    sequences=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=7),
        min_size=1,
        max_size=8,
    ),
    labels=st.lists(st.sampled_from(["a", "b", "7", "-3"]), min_size=8, max_size=8),
)
def test_wide_csv_and_npz_round_trip(sequences, labels):
    labels = labels[: len(sequences)]
    width = max(len(s) for s in sequences)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["label", *(f"t{i}" for i in range(width))])
    for seq, label in zip(sequences, labels, strict=True):
        writer.writerow([label, *map(repr, seq), *[""] * (width - len(seq))])
    padded = np.full((len(sequences), width), np.nan)
    for i, seq in enumerate(sequences):
        padded[i, : len(seq)] = seq
    npz = io.BytesIO()
    np.savez(npz, X=padded, y=np.array(labels))
    for data in (_read(buffer.getvalue().encode(), ".csv"), _read(npz.getvalue(), ".npz")):
        assert data is not None
        assert data.lengths.tolist() == [len(s) for s in sequences]
        assert data.labels.tolist() == labels
        for i, seq in enumerate(sequences):
            np.testing.assert_array_equal(data.inputs[i, : len(seq), 0], seq)
