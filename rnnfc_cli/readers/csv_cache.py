"""Large CSV files, converted once (streaming) into memory-mapped arrays and reused.

A CSV file of ``MIN_BYTES`` or more is read twice, row by row, never whole: a first pass
checks the framing and counts the sequences and their longest length, a second parses
blocks of rows with the same code (and so the same checks and messages, row numbers
included) as the in-memory reader, writing each block into a ``.npy`` in the cache
directory. Later reads of the unchanged file (same path, size, modification time and
reading options) map that cache directly. A long CSV qualifies when the rows of each
sequence are consecutive (sorted or grouped by id); one whose ids interleave is read in
memory, as smaller files are.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers.csv import (
    UTF16_BOMS,
    CsvTable,
    check_header,
    csv_rows,
    decode_text,
    long_csv,
    reserved_columns,
    value_columns,
    wide_csv,
)
from rnnfc_cli.readers.numpy import load_npy
from rnnfc_cli.readers.sequences import ReadOptions, SequenceData, canonical_labels

MIN_BYTES = 32 * 2**20  # parsing in memory takes ~30 times the file size
BLOCK_ROWS = 100_000
_FORMAT = 1  # bump when the cache layout changes


def cached(file: Path, options: ReadOptions, delimiter: str) -> SequenceData | None:
    """The sequences of a large CSV ``file`` from the cache, converting it first when
    needed; None when the file is read in memory instead."""
    from rnnfc_cli.runtime import cache_dir

    stat = file.stat()
    key = json.dumps(
        [
            _FORMAT,
            str(file.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            delimiter,
            options.label_col,
            options.id_col,
            options.time_col,
            options.require_labels,
            options.features,
            options.ignore,
            options.time_features,
        ]
    )
    directory = cache_dir() / "csv" / hashlib.sha256(key.encode()).hexdigest()[:32]
    try:
        if not (directory / "meta.json").is_file() and not _convert(
            file, options, delimiter, directory
        ):
            return None
        return _load(directory, str(file))
    except OSError:  # no room or no permission for the cache: read in memory instead
        return None


def _rows(file: Path, delimiter: str, source: str):
    """(header, iterator of (line number, row)) with the in-memory reader's framing checks."""

    with file.open("rb") as handle:
        prefix = handle.read(65536)
    utf16 = prefix.startswith(UTF16_BOMS)
    if not utf16 and b"\n" in prefix:
        # The in-memory reader's encoding checks (NUL bytes, UTF-16 without a byte-order
        # mark) on the first whole lines; UTF-16 is left to the stream's decoder, as a cut
        # at a newline byte may split one of its characters.
        decode_text(prefix[: prefix.rindex(b"\n")], source)
    text = file.open(encoding="utf-16" if utf16 else "utf-8-sig", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as err:
        raise BadInputError(f"{source}: row 1: {err}") from None
    if header is None or not any(cell.strip() for cell in header):
        raise BadInputError(f"{source}: is empty; expected a header row and data rows")
    header = [name.strip() for name in header]
    check_header(header, source)

    def rows():
        with text:
            try:
                yield from csv_rows(reader, len(header), source)
            except UnicodeDecodeError:
                raise BadInputError(
                    f"{source}: row {reader.line_num + 1}: not UTF-8 text; save the file as UTF-8"
                ) from None

    return header, rows()


def _shape(file: Path, options: ReadOptions, delimiter: str) -> tuple[int, int, bool] | None:
    """First pass: (sequences, longest length, long format), or None when a long CSV's
    sequences are not in consecutive rows."""
    source = str(file)
    header, rows = _rows(file, delimiter, source)
    if options.id_col not in header:
        count = sum(1 for _ in rows)
        if count == 0:
            raise BadInputError(f"{source}: has a header but no data rows")
        return count, len(value_columns(header, options, source, {options.label_col})), False
    id_index = header.index(options.id_col)
    seen: set[str] = set()
    current, run, longest = None, 0, 0
    for _, row in rows:
        ident = row[id_index].strip()
        if ident != current:
            if ident in seen:
                return None
            seen.add(ident)
            current, run = ident, 0
        run += 1
        longest = max(longest, run)
    if not seen:
        raise BadInputError(f"{source}: has a header but no data rows")
    return len(seen), longest, True


def _convert(file: Path, options: ReadOptions, delimiter: str, directory: Path) -> bool:
    """Second pass: parse blocks of rows and write the arrays; False if not streamable."""

    shape = _shape(file, options, delimiter)
    if shape is None:
        return False
    count, longest, long_format = shape
    source = str(file)
    header, rows = _rows(file, delimiter, source)
    features = 1
    if long_format:
        columns = value_columns(header, options, source, reserved_columns(options))
        features = max(1, len(columns) + len(options.time_features))
    partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    try:
        inputs = np.lib.format.open_memmap(
            partial / "X.npy", mode="w+", dtype=np.float64, shape=(count, longest, features)
        )
        lengths = np.zeros(count, np.int64)
        raw_labels: list[str] = []
        ids: list = []
        names = None
        offset = 0
        id_index = header.index(options.id_col) if long_format else None
        label_index = header.index(options.label_col) if options.label_col in header else None

        def flush(block: list[tuple[int, list[str]]]) -> None:
            nonlocal offset, names
            table = CsvTable(
                source,
                header,
                np.array([row for _, row in block], dtype=str),
                np.array([line for line, _ in block]),
            )
            part = (long_csv if long_format else wide_csv)(table, options)
            n, width = part.inputs.shape[:2]
            inputs[offset : offset + n, :width] = part.inputs
            lengths[offset : offset + n] = part.lengths
            if long_format:
                ids.extend(part.ids)
                names = part.feature_names
            else:
                ids.extend(range(offset, offset + n))
            if part.labels is not None and label_index is not None:
                raw_labels.extend(_first_labels(block, label_index, id_index))
            offset += n

        block: list[tuple[int, list[str]]] = []
        for line, row in rows:
            boundary = (
                long_format and block and row[id_index].strip() != block[-1][1][id_index].strip()
            )
            if len(block) >= BLOCK_ROWS and (not long_format or boundary):
                flush(block)
                block = []
            block.append((line, row))
        flush(block)
        inputs.flush()
        np.save(partial / "lengths.npy", lengths)
        if raw_labels:
            np.save(partial / "labels.npy", canonical_labels(np.array(raw_labels, dtype=str)))
        np.save(partial / "ids.npy", np.array(ids))
        meta = {
            "source_format": "long-csv" if long_format else "wide-csv",
            "feature_names": None if names is None else list(names),
            "labels": bool(raw_labels),
        }
        (partial / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(partial, directory)
        except OSError:  # another process cached it first
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return True


def _first_labels(block, label_index: int, id_index: int | None) -> list[str]:
    """The raw label of each sequence in ``block``: every row's (wide), or the first row's
    of each id (long); canonicalised over the whole file at the end."""
    if id_index is None:
        return [row[label_index].strip() for _, row in block]
    labels, previous = [], None
    for _, row in block:
        ident = row[id_index].strip()
        if ident != previous:
            labels.append(row[label_index].strip())
            previous = ident
    return labels


def _load(directory: Path, source: str) -> SequenceData:
    from rnnfc_cli.lazy import LazyInputs

    meta = json.loads((directory / "meta.json").read_text())
    lengths = np.load(directory / "lengths.npy")
    ids = np.load(directory / "ids.npy").tolist()
    labels = np.load(directory / "labels.npy") if meta["labels"] else None
    names = meta["feature_names"]
    return SequenceData(
        inputs=LazyInputs.of(load_npy(directory / "X.npy", "X"), lengths),
        lengths=lengths,
        labels=labels,
        ids=ids,
        feature_names=None if names is None else tuple(names),
        source_format=meta["source_format"],
        source=source,
    )
