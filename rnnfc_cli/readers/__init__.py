"""Read sequences from wide CSV, long CSV, NPZ and NPY into one validated structure.

Every problem a user can fix raises ``BadInputError`` with a message that
names the file and the place (row and column for CSV, key and index for NumPy files).

The package: ``sequences`` (what a reader returns, and the options), ``csv_source`` (CSV
text parsed into typed columns by pyarrow, or by Python's csv module where a problem
needs its row named), ``csv`` and ``numpy`` (one reader each), ``csv_cache`` (large CSV
files converted once, streaming, into memory-mapped arrays, with the CSV reader's own
checks), and here the dispatch on the file's format.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers import csv_cache
from rnnfc_cli.readers.csv import exact_pattern, read_csv
from rnnfc_cli.readers.csv_source import GZIP_MAGIC, CsvInput
from rnnfc_cli.readers.numpy import (
    LAZY_MIN_BYTES,
    NPY_MAGIC,
    ZIP_MAGIC,
    read_label_file,
    read_npy,
    read_npz,
)
from rnnfc_cli.readers.sequences import (
    MODEL_FEATURES,
    Categories,
    ReadOptions,
    SequenceData,
    canonical_labels,
    label_kind,
    sorted_vocabulary,
    valid_steps,
)

__all__ = [
    "LAZY_MIN_BYTES",
    "MODEL_FEATURES",
    "STDIN",
    "Categories",
    "ReadOptions",
    "SequenceData",
    "canonical_labels",
    "exact_pattern",
    "label_kind",
    "read_label_file",
    "read_sequences",
    "sorted_vocabulary",
    "valid_steps",
]

STDIN = "-"


def read_sequences(path: str, options: ReadOptions | None = None) -> SequenceData:
    """Read any supported file (or ``-`` for CSV on stdin) into ``SequenceData``."""
    options = options or ReadOptions()
    if path == STDIN:
        return read_csv(CsvInput("<stdin>", raw=sys.stdin.buffer.read()), options)
    file = Path(path)
    if not file.exists():
        raise BadInputError(f"{path}: no such file")
    if file.is_dir():
        raise BadInputError(f"{path}: is a directory, not a data file")
    try:
        with file.open("rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise BadInputError(f"{path}: cannot read ({err.strerror})") from None
    kind = _detect_format(file, head)
    if kind != "csv" and options.selects_columns and options.chosen_by == "--features":
        raise BadInputError(
            f"{path}: --features and --ignore choose CSV columns; an {kind.upper()} file has "
            "no column names (save only the features to use)"
        )
    if kind != "csv" and options.time_features:
        raise BadInputError(
            f"{path}: time features come from a long CSV's time column; an {kind.upper()} "
            "file has none"
        )
    if kind != "csv" and (options.categorical or options.tokens is not None):
        flag = "--tokens" if options.tokens is not None else "--categorical"
        raise BadInputError(
            f"{path}: {flag} reads tokens from CSV columns; an {kind.upper()} file holds "
            "numbers only (write the tokens to a CSV)"
        )
    if kind == "npz":
        return read_npz(file, options)
    if kind == "npy":
        return read_npy(file, options)
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    if file.stat().st_size >= csv_cache.MIN_BYTES:
        cached = csv_cache.cached(file, options, delimiter)
        if cached is not None:
            return cached
    return read_csv(CsvInput(str(file), path=file, delimiter=delimiter), options)


def _detect_format(file: Path, head: bytes) -> str:
    suffix = file.suffix.lower()
    if head.startswith(GZIP_MAGIC):
        raise BadInputError(f"{file}: is gzip-compressed; decompress it first (gunzip)")
    if suffix == ".npz" or (suffix not in (".csv", ".npy") and head.startswith(ZIP_MAGIC)):
        return "npz"
    if suffix == ".npy" or (suffix != ".csv" and head.startswith(NPY_MAGIC)):
        return "npy"
    if suffix in (".csv", ".txt", ".tsv") or not suffix:
        return "csv"
    raise BadInputError(
        f"{file}: unknown format '{suffix}': rnnfc reads .csv, .tsv, .txt, .npz and .npy files, "
        "or '-' for CSV on stdin; convert it to one of those"
    )
