"""Fuzzing the readers: any bytes give data or a clean BadInputError, never another exception;
any well-formed table round-trips."""

from __future__ import annotations

import csv
import io
import os
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
