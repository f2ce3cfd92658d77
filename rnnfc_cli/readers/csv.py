"""Wide and long CSV (or TSV) text into ``SequenceData``.

Every problem a user can fix raises ``BadInputError`` naming the file, the row and the
column.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import fnmatch
import io
import re
from collections.abc import Iterator, Sequence

import numpy as np

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers.sequences import (
    MODEL_FEATURES,
    ReadOptions,
    SequenceData,
    canonical_labels,
    preview,
    time_feature_name,
    valid_steps,
)

UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
GZIP_MAGIC = b"\x1f\x8b"


def read_csv(raw: bytes, source: str, options: ReadOptions, delimiter: str = ",") -> SequenceData:
    text = decode_text(raw, source)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise BadInputError(f"{source}: is empty; expected a header row and data rows")
        header = [name.strip() for name in header]
        check_header(header, source)
    except csv.Error as err:
        raise BadInputError(f"{source}: row {reader.line_num}: {err}") from None
    rows, row_numbers = [], []
    for line, row in csv_rows(reader, len(header), source):
        rows.append(row)
        row_numbers.append(line)
    if not rows:
        raise BadInputError(f"{source}: has a header but no data rows")
    table = CsvTable(source, header, np.array(rows, dtype=str), np.asarray(row_numbers))
    if options.id_col in header:
        return long_csv(table, options)
    return wide_csv(table, options)


def csv_rows(reader, fields: int, source: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) for each non-blank row after the header; a row with another
    number of fields than the header's is an error naming its line."""
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != fields:
                raise BadInputError(
                    f"{source}: row {reader.line_num}: has {len(row)} fields, "
                    f"the header has {fields}"
                )
            yield reader.line_num, row
    except csv.Error as err:
        raise BadInputError(f"{source}: row {reader.line_num}: {err}") from None


def decode_text(raw: bytes, source: str) -> str:
    """UTF-8 (with or without a byte-order mark), or UTF-16 marked by its byte-order mark
    (what spreadsheets save as "Unicode text"); anything else is refused with its place."""
    if raw.startswith(GZIP_MAGIC):
        raise BadInputError(f"{source}: is gzip-compressed; decompress it first (gunzip)")
    encoding = "utf-16" if raw.startswith(UTF16_BOMS) else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise BadInputError(
            f"{source}: row {line}: not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text (byte "
            f"0x{raw[err.start]:02x}); save the file as UTF-8"
        ) from None
    if "\x00" in text:
        if raw[1:2] == b"\x00" or raw[0:1] == b"\x00":
            raise BadInputError(
                f"{source}: looks like UTF-16 without a byte-order mark; save it as UTF-8"
            )
        raise BadInputError(f"{source}: contains NUL bytes; is it a binary file?")
    return text


def check_header(header: list[str], source: str) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if not name:
            raise BadInputError(f"{source}: row 1: column {position} has a blank name")
        if name in seen:
            raise BadInputError(
                f"{source}: row 1: column name '{name}' appears twice "
                f"(columns {seen[name]} and {position})"
            )
        seen[name] = position


def value_columns(
    header: list[str], options: ReadOptions, source: str, reserved: set[str]
) -> list[int]:
    """Indices of the columns that hold values, in model order: those ``options.features``
    matches (in the order of its patterns), else every column not ``reserved`` (id, time,
    label); less those ``options.ignore`` matches. Reserved columns are never values."""
    if options.features:
        chosen: list[int] = []
        for pattern in options.features:
            matches = [
                i
                for i, name in enumerate(header)
                if name not in reserved and fnmatch.fnmatchcase(name, pattern)
            ]
            if not matches:
                raise BadInputError(
                    f"{source}: {_unmatched(pattern, options)} (columns: {preview(header)})"
                )
            chosen += [i for i in matches if i not in chosen]
    else:
        chosen = [i for i, name in enumerate(header) if name not in reserved]
    kept = [
        i
        for i in chosen
        if not any(fnmatch.fnmatchcase(header[i], pattern) for pattern in options.ignore)
    ]
    if chosen and not kept:
        raise BadInputError(
            f"{source}: --ignore {','.join(options.ignore)} leaves no value columns "
            f"(columns: {preview(header)})"
        )
    return kept


def exact_pattern(name: str) -> str:
    """A glob pattern that matches ``name`` only (its wildcards bracketed)."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


def _unmatched(pattern: str, options: ReadOptions) -> str:
    if options.chosen_by == MODEL_FEATURES:
        name = re.sub(r"\[([*?[])\]", r"\1", pattern)  # undo exact_pattern
        return f"missing feature column '{name}' that the model was trained on"
    return f"no column matches {options.chosen_by} '{pattern}'"


@dataclasses.dataclass(frozen=True)
class CsvTable:
    source: str
    header: list[str]
    cells: np.ndarray  # str[rows, columns], unstripped
    row_numbers: np.ndarray  # int[rows], 1-based file line of each row

    def column(self, name: str) -> np.ndarray:
        return np.char.strip(self.cells[:, self.header.index(name)])

    def where(self, row: int, column: int) -> str:
        return f"{self.source}: row {self.row_numbers[row]}, column '{self.header[column]}'"

    def numbers(self, columns: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Parse ``columns`` as float64; empty cells come back as 0 with ``empty`` True."""
        cells = np.char.strip(self.cells[:, columns])
        empty = cells == ""
        try:
            values = np.where(empty, "0", cells).astype(np.float64)
        except ValueError:
            row, col = self._first_bad_number(cells, empty)
            name = self.header[columns[col]]
            raise BadInputError(
                f"{self.where(row, columns[col])}: '{cells[row, col]}' is not a number; "
                f"feature columns hold numbers (if '{name}' holds the class, add --label-col "
                f"{name}; else remove the column)"
            ) from None
        bad = ~np.isfinite(values) & ~empty
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise BadInputError(
                f"{self.where(row, columns[col])}: {cells[row, col]} is not a finite number"
            )
        return values, empty

    @staticmethod
    def _first_bad_number(cells: np.ndarray, empty: np.ndarray) -> tuple[int, int]:
        for (row, col), cell in np.ndenumerate(cells):
            if empty[row, col]:
                continue
            try:
                float(cell)
            except ValueError:
                return row, col
        raise AssertionError("numpy rejected a cell that float() accepts")


def _label_candidate(header: list[str], options: ReadOptions) -> str:
    """The column most likely to hold the labels, for an example in a message: the last one
    that is not the id or time column (exports tend to put the target last)."""
    others = [name for name in header if name not in (options.id_col, options.time_col)]
    return (others or header)[-1]


def _csv_labels(table: CsvTable, options: ReadOptions) -> np.ndarray | None:
    if options.label_col not in table.header:
        if options.require_labels:
            raise BadInputError(
                f"{table.source}: no label column '{options.label_col}' "
                f"(columns: {preview(table.header)}); name it with --label-col, e.g. "
                f"--label-col {_label_candidate(table.header, options)}"
            )
        return None
    if not options.require_labels:
        return None
    labels = table.column(options.label_col)
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise BadInputError(
            f"{table.where(empty[0], table.header.index(options.label_col))}: empty label"
        )
    return canonical_labels(labels)


def wide_csv(table: CsvTable, options: ReadOptions) -> SequenceData:
    if options.time_features:
        raise BadInputError(
            f"{table.source}: --time-features needs a long CSV (an id and a time column); "
            "this one is wide"
        )
    if options.chosen_by == MODEL_FEATURES:
        # A long-CSV model's feature names mean nothing to a wide file: read it whole, and
        # the feature count check says what is wrong.
        options = dataclasses.replace(options, features=())
    labels = _csv_labels(table, options)
    steps = value_columns(table.header, options, table.source, {options.label_col})
    if not steps:
        raise BadInputError(f"{table.source}: has no time-step columns besides the label")
    values, empty = table.numbers(steps)
    present = ~empty
    lengths = np.where(present.any(axis=1), present.shape[1] - np.argmax(present[:, ::-1], 1), 0)
    if (lengths == 0).any():
        row = int(np.flatnonzero(lengths == 0)[0])
        raise BadInputError(f"{table.source}: row {table.row_numbers[row]}: has no values")
    gaps = empty & valid_steps(lengths, len(steps))
    if gaps.any():
        row, col = np.argwhere(gaps)[0]
        raise BadInputError(
            f"{table.where(row, steps[col])}: empty cell inside the sequence "
            "(only trailing cells may be empty)"
        )
    return SequenceData(
        inputs=values[:, :, None],
        lengths=lengths.astype(np.int64),
        labels=labels,
        ids=list(range(len(values))),
        feature_names=None,
        source_format="wide-csv",
        source=table.source,
    )


def long_csv(table: CsvTable, options: ReadOptions) -> SequenceData:
    labels = _csv_labels(table, options)
    features = value_columns(table.header, options, table.source, reserved_columns(options))
    if not features:
        raise BadInputError(
            f"{table.source}: has no feature columns besides "
            f"'{options.id_col}', '{options.label_col}' and '{options.time_col}'"
        )
    values, empty = table.numbers(features)
    if empty.any():
        row, col = np.argwhere(empty)[0]
        raise BadInputError(f"{table.where(row, features[col])}: empty cell (missing value)")
    ids = table.column(options.id_col)
    id_col = table.header.index(options.id_col)
    if (ids == "").any():
        raise BadInputError(f"{table.where(int(np.flatnonzero(ids == '')[0]), id_col)}: empty id")
    unique_ids, first_row, group = np.unique(ids, return_index=True, return_inverse=True)
    appearance = np.argsort(first_row, kind="stable")
    rank = np.empty_like(appearance)
    rank[appearance] = np.arange(len(appearance))
    group = rank[group]
    seconds = None
    if options.time_features:
        if options.time_col not in table.header:
            raise BadInputError(
                f"{table.source}: --time-features needs the time column '{options.time_col}' "
                f"(columns: {preview(table.header)}); name it with --time-col"
            )
        seconds = time_seconds(table, options.time_col)
    order_keys = [group]
    if options.time_col in table.header:
        keys = seconds if seconds is not None else _time_keys(table, options.time_col)
        order_keys.insert(0, keys)
    order = np.lexsort(order_keys)
    counts = np.bincount(group)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(order)) - starts[group[order]]
    rows = values[order]
    names = tuple(table.header[i] for i in features)
    if seconds is not None:
        rows = np.concatenate([rows, _time_features(seconds[order], position, options)], axis=1)
        names += tuple(time_feature_name(options.time_col, k) for k in options.time_features)
    inputs = np.zeros((len(counts), int(counts.max()), rows.shape[1]))
    inputs[group[order], position] = rows
    if labels is not None:
        labels = _labels_per_group(table, options, labels, group, unique_ids[appearance])
    return SequenceData(
        inputs=inputs,
        lengths=counts.astype(np.int64),
        labels=labels,
        ids=[str(i) for i in unique_ids[appearance]],
        feature_names=names,
        source_format="long-csv",
        source=table.source,
    )


def reserved_columns(options: ReadOptions) -> set[str]:
    """The long-CSV columns that are never features."""
    return {options.id_col, options.label_col, options.time_col}


def time_seconds(table: CsvTable, time_col: str) -> np.ndarray:
    """Each row's time, float64: all numbers as they are, or all ISO-8601 timestamps in
    seconds (all with a UTC offset, or all without); anything else names its row."""
    times = table.column(time_col)
    column = table.header.index(time_col)
    unique, inverse = np.unique(times, return_inverse=True)
    values = [_number_or_timestamp(text) for text in unique.tolist()]
    kinds = np.array([_time_kind(value) for value in values])
    row_kinds = kinds[inverse]
    if (row_kinds == "").any():
        row = int(np.flatnonzero(row_kinds == "")[0])
        raise BadInputError(
            f"{table.where(row, column)}: '{times[row]}' is neither a number nor an ISO-8601 "
            "timestamp (2024-05-01T12:00:00, optionally with +02:00 or Z)"
        )
    if (row_kinds != row_kinds[0]).any():
        row = int(np.flatnonzero(row_kinds != row_kinds[0])[0])
        raise BadInputError(
            f"{table.where(row, column)}: '{times[row]}' is {row_kinds[row]}, '{times[0]}' "
            f"(row {table.row_numbers[0]}) {row_kinds[0]}; give every time the same way"
        )
    if row_kinds[0] == "a number":
        return np.array(values, dtype=np.float64)[inverse]
    aware = row_kinds[0] == "a timestamp with a UTC offset"
    origin = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC if aware else None)
    return np.array([(stamp - origin).total_seconds() for stamp in values])[inverse]


def _number_or_timestamp(text: str) -> float | datetime.datetime | None:
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if np.isfinite(number) else None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _time_kind(value: float | datetime.datetime | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "a number"
    if value.tzinfo is None:
        return "a timestamp without a UTC offset"
    return "a timestamp with a UTC offset"


def _time_features(seconds: np.ndarray, position: np.ndarray, options: ReadOptions) -> np.ndarray:
    """float64[rows, len(options.time_features)] for rows sorted by sequence and time
    (``position``: each row's step within its sequence): log1p of the time since the
    previous step (0 at the first) and since the first step. The logarithm keeps a few
    long pauses from flattening every ordinary gap once the features are scaled."""
    gap = np.where(position == 0, 0.0, np.diff(seconds, prepend=seconds[:1]))
    first = np.arange(len(seconds)) - position
    derived = {"gap": np.log1p(gap), "elapsed": np.log1p(seconds - seconds[first])}
    return np.stack([derived[kind] for kind in options.time_features], axis=1)


def _time_keys(table: CsvTable, time_col: str) -> np.ndarray:
    """Numeric times sort as numbers; anything else (ISO timestamps) sorts as text."""
    times = table.column(time_col)
    try:
        return times.astype(np.float64)
    except ValueError:
        return np.unique(times, return_inverse=True)[1]


def _labels_per_group(
    table: CsvTable,
    options: ReadOptions,
    labels: np.ndarray,
    group: np.ndarray,
    group_ids: np.ndarray,
) -> np.ndarray:
    first = np.zeros(group.max() + 1, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group))[::-1]
    per_group = labels[first]
    changed = np.flatnonzero(labels != per_group[group])
    if changed.size:
        row = int(changed[0])
        raise BadInputError(
            f"{table.where(row, table.header.index(options.label_col))}: label "
            f"'{labels[row]}' differs from '{per_group[group[row]]}' earlier in "
            f"id '{group_ids[group[row]]}' (one label per sequence)"
        )
    return per_group
