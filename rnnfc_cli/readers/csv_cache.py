"""Large CSV files, converted once (streaming) into memory-mapped arrays and reused.

A CSV file of ``MIN_BYTES`` or more is read twice in batches, never whole: a first pass
reads the id column alone, checks that each sequence's rows are consecutive and counts
the sequences and their longest length; a second parses batches of rows (pyarrow's, or
Python's csv module's when pyarrow refuses the file, as in memory) cut at sequence
boundaries, with the same code (and so the same checks and messages, row numbers
included) as the in-memory reader, writing each into a ``.npy`` in the cache directory.
Later reads of the unchanged file (same path, size, modification time and reading
options) map that cache directly. A long CSV whose ids interleave is read in memory.
Token columns (``--categorical``, ``--tokens``) are cached as int32 codes numbered over
the whole file, their texts beside them; for ``--tokens`` the first pass reads that
column and finds the longest sequence.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers.csv import CsvPlan, CsvTable, column_codes, plan_columns
from rnnfc_cli.readers.csv_source import (
    CATEGORY,
    CsvInput,
    arrow_batches,
    python_batches,
    read_header,
)
from rnnfc_cli.readers.numpy import load_npy
from rnnfc_cli.readers.sequences import (
    Categories,
    ReadOptions,
    SequenceData,
    canonical_labels,
    token_splitter,
)

MIN_BYTES = 256 * 2**20  # in memory, a read takes about 3 times the file size
BLOCK_BYTES = 2**20  # text per pyarrow batch (its read-ahead holds many: peak memory grows with it)
BLOCK_ROWS = 100_000  # rows per batch of Python's csv module
_FORMAT = 3  # bump when the cache layout changes


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
            options.categorical,
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


def _convert(file: Path, options: ReadOptions, delimiter: str, directory: Path) -> bool:
    """Both passes, with pyarrow, else (where it refuses the file) with Python's csv
    module; False if the file's sequences are not in consecutive rows."""
    import pyarrow as pa

    csv_input = CsvInput(str(file), path=file, delimiter=delimiter)
    header = read_header(csv_input)
    plan = plan_columns(header, options, csv_input.source)
    try:
        return _convert_with(csv_input, header, plan, options, directory, python=False)
    except pa.ArrowInvalid:
        return _convert_with(csv_input, header, plan, options, directory, python=True)


def _batches(csv_input: CsvInput, header: list[str], columns: Mapping[str, str], python: bool):
    if python:
        return python_batches(csv_input, header, columns, BLOCK_ROWS)
    return arrow_batches(csv_input, header, columns, BLOCK_BYTES)


def _shape(batches: Iterator, long: bool) -> tuple[int, int] | None:
    """First pass over one column: (sequences, longest run of one id) for a long CSV,
    (rows, 0) for a wide one; None when an id's rows are not consecutive."""
    seen: set[str] = set()
    current, run, longest, rows = None, 0, 0, 0
    for batch in batches:
        rows += batch.num_rows
        if not long or not batch.num_rows:
            continue
        codes, texts = column_codes(batch.column(0))
        starts = np.flatnonzero(np.diff(codes, prepend=-1))
        runs = np.diff(np.append(starts, len(codes)))
        for ident, length in zip(texts[codes[starts]].tolist(), runs.tolist(), strict=True):
            if ident == current:
                run += length
            elif ident in seen:
                return None
            else:
                seen.add(ident)
                current, run = ident, length
            longest = max(longest, run)
    return (len(seen), longest) if long else (rows, 0)


def _token_shape(batches: Iterator, split: str) -> tuple[int, int]:
    """First pass over a ``--tokens`` column: (rows, the most tokens in one cell)."""
    splitter = token_splitter(split)
    rows, longest = 0, 0
    for batch in batches:
        rows += batch.num_rows
        if batch.num_rows:
            texts = column_codes(batch.column(0))[1].tolist()
            longest = max(longest, max(len(splitter(text)) for text in texts))
    return rows, longest


def _convert_with(
    csv_input: CsvInput,
    header: list[str],
    plan: CsvPlan,
    options: ReadOptions,
    directory: Path,
    python: bool,
) -> bool:
    """Second pass: parse batches cut at sequence boundaries and write the arrays."""
    import pyarrow as pa

    first = options.id_col if plan.long else next(iter(plan.columns))
    if plan.tokens is not None:
        first_pass = _batches(csv_input, header, {plan.tokens: CATEGORY}, python)
        shape = _token_shape(first_pass, options.token_split)
    else:
        shape = _shape(_batches(csv_input, header, {first: CATEGORY}, python), plan.long)
    if shape is None:
        return False
    count, longest = shape
    if count == 0:
        raise BadInputError(f"{csv_input.source}: has a header but no data rows")
    width, features = (longest, len(plan.values) + len(options.time_features))
    if plan.tokens is not None:
        width, features = max(longest, 1), 0  # the tokens alone, no numbers
    elif not plan.long:
        width, features = len(plan.values), 1
    partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    try:
        with _CacheWriter(partial, count, width, features, plan.token_columns) as writer:
            pending = None
            for batch in _batches(csv_input, header, plan.columns, python):
                table = pa.Table.from_batches([batch])
                pending = table if pending is None else pa.concat_tables([pending, table])
                cut = pending.num_rows
                if plan.long and cut:  # keep the last sequence: it may go on in the next batch
                    codes = column_codes(pending.column(options.id_col))[0]
                    heads = np.flatnonzero(np.diff(codes))
                    cut = int(heads[-1]) + 1 if heads.size else 0
                if cut:
                    chunk = CsvTable(csv_input, header, pending.slice(0, cut), writer.rows)
                    writer.add(plan.sequences(chunk, options), cut, plan.long)
                    pending = pending.slice(cut)
            if pending is not None and pending.num_rows:
                chunk = CsvTable(csv_input, header, pending, writer.rows)
                writer.add(plan.sequences(chunk, options), pending.num_rows, plan.long)
        writer.save(partial)
        try:
            os.replace(partial, directory)
        except OSError:  # another process cached it first
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return True


class _CacheWriter:
    """The cache's arrays, filled block of whole sequences by block. ``X.npy`` (and the
    token codes' ``tokens.npy``) are written in order, not through a memory map: a map's
    written pages count in the process's resident memory until the kernel writes them
    back. Token codes are numbered over the whole file as the blocks come (each block's
    reader numbers its own), their texts kept in ``tokens.json``."""

    def __init__(
        self, partial: Path, count: int, width: int, features: int, categorical: tuple[str, ...]
    ):
        self.inputs = (partial / "X.npy").open("wb")
        header = {"descr": "<f8", "fortran_order": False, "shape": (count, width, features)}
        np.lib.format.write_array_header_2_0(self.inputs, header)
        self.categorical = categorical
        self.codes: dict[str, dict[str, int]] = {name: {} for name in categorical}
        self.tokens = (partial / "tokens.npy").open("wb") if categorical else None
        if self.tokens is not None:
            shape = (count, width, len(categorical))
            np.lib.format.write_array_header_2_0(
                self.tokens, {"descr": "<i4", "fortran_order": False, "shape": shape}
            )
        self.width, self.features = width, features
        self.lengths = np.zeros(count, np.int64)
        self.labels: list[np.ndarray] = []
        self.ids: list = []
        self.names: tuple[str, ...] | None = None
        self.source_format = ""  # the readers' name for the layout, from the first block
        self.sequences = self.rows = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.inputs.close()
        if self.tokens is not None:
            self.tokens.close()

    def add(self, part: SequenceData, rows: int, long: bool) -> None:
        """Write the sequences read from the file's next ``rows`` rows."""
        n, steps = part.inputs.shape[:2]
        block = part.inputs
        if steps < self.width:
            block = np.zeros((n, self.width, self.features))
            block[:, :steps] = part.inputs
        self.inputs.write(np.ascontiguousarray(block, dtype="<f8").data)
        if self.tokens is not None:
            codes = np.full((n, self.width, len(self.categorical)), -1, "<i4")
            for c, column in enumerate(part.categories):
                known = self.codes[column.name]
                index = np.array(
                    [known.setdefault(t, len(known)) for t in column.texts.tolist()], np.int64
                )
                codes[:, :steps, c] = column.recoded(index, -1)
            self.tokens.write(codes.data)
        self.lengths[self.sequences : self.sequences + n] = part.lengths
        self.ids.extend(part.ids if long else range(self.sequences, self.sequences + n))
        self.names = part.feature_names
        self.source_format = part.source_format
        if part.labels is not None:
            self.labels.append(part.labels)
        self.sequences += n
        self.rows += rows

    def save(self, partial: Path) -> None:
        np.save(partial / "lengths.npy", self.lengths)
        if self.labels:
            np.save(partial / "labels.npy", canonical_labels(np.concatenate(self.labels)))
        np.save(partial / "ids.npy", np.array(self.ids))
        if self.categorical:
            texts = {name: list(self.codes[name]) for name in self.categorical}
            (partial / "tokens.json").write_text(json.dumps(texts))
        meta = {
            "source_format": self.source_format,
            "feature_names": None if self.names is None else list(self.names),
            "labels": bool(self.labels),
        }
        (partial / "meta.json").write_text(json.dumps(meta))


def _load(directory: Path, source: str) -> SequenceData:
    from rnnfc_cli.lazy import LazyInputs

    meta = json.loads((directory / "meta.json").read_text())
    lengths = np.load(directory / "lengths.npy")
    ids = np.load(directory / "ids.npy").tolist()
    labels = np.load(directory / "labels.npy") if meta["labels"] else None
    names = meta["feature_names"]
    categories = []
    if (directory / "tokens.json").is_file():
        texts = json.loads((directory / "tokens.json").read_text())
        codes = load_npy(directory / "tokens.npy", "tokens")
        categories = [
            Categories(name, codes[:, :, c], np.array(words, dtype=str))
            for c, (name, words) in enumerate(texts.items())
        ]
    return SequenceData(
        inputs=LazyInputs.of(load_npy(directory / "X.npy", "X"), lengths),
        lengths=lengths,
        labels=labels,
        ids=ids,
        feature_names=None if names is None else tuple(names),
        source_format=meta["source_format"],
        source=source,
        categories=tuple(categories),
    )
