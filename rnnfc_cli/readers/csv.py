"""Wide and long CSV (or TSV) into ``SequenceData``: which columns a read needs, then the
checks and the reshaping of the typed columns that ``csv_source`` parses.

Every problem a user can fix raises ``BadInputError`` naming the file, the row and the
column.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import re
from typing import TYPE_CHECKING

import numpy as np

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers.csv_source import (
    CATEGORY,
    NUMBER,
    TEXT,
    CsvInput,
    column_into,
    is_number,
    read_header,
    read_table,
    row_at,
    values_of,
)
from rnnfc_cli.readers.sequences import (
    MODEL_FEATURES,
    Categories,
    ReadOptions,
    SequenceData,
    canonical_labels,
    preview,
    time_feature_name,
    token_splitter,
    valid_steps,
)

if TYPE_CHECKING:
    import pyarrow as pa


def read_csv(csv_input: CsvInput, options: ReadOptions) -> SequenceData:
    header = read_header(csv_input)
    plan = plan_columns(header, options, csv_input.source)
    table = read_table(csv_input, header, plan.columns)
    if table.num_rows == 0:
        raise BadInputError(f"{csv_input.source}: has a header but no data rows")
    data = plan.sequences(CsvTable(csv_input, header, table), options)
    if data.labels is None:
        return data
    return dataclasses.replace(data, labels=canonical_labels(data.labels))


@dataclasses.dataclass(frozen=True)
class CsvPlan:
    """What a read takes from a CSV file.

    Attributes:
      long: the long layout (an id column groups rows into sequences), else wide (a row
        is a sequence).
      values: the value columns in model order (long: features; wide: time steps).
      columns: every column read, name -> ``NUMBER``, ``TEXT`` or ``CATEGORY``.
      label: the label column when labels are read, else None.
      categorical: long layout: the columns read as categories (``--categorical``).
      tokens: the column whose cells are whole token sequences (``--tokens``), else None.
    """

    long: bool
    values: tuple[str, ...]
    columns: dict[str, str]
    label: str | None
    categorical: tuple[str, ...] = ()
    tokens: str | None = None

    @property
    def token_columns(self) -> tuple[str, ...]:
        """The columns read as tokens, categorical or one token sequence per cell."""
        return (self.tokens,) if self.tokens is not None else self.categorical

    def sequences(self, table: CsvTable, options: ReadOptions) -> SequenceData:
        """Sequences with their labels as written (canonical only over a whole file)."""
        if self.tokens is not None:
            return token_csv(table, options, self)
        return long_csv(table, options, self) if self.long else wide_csv(table, options, self)


def plan_columns(header: list[str], options: ReadOptions, source: str) -> CsvPlan:
    label = options.label_col if options.require_labels else None
    if label is not None and label not in header:
        raise BadInputError(
            f"{source}: no label column '{label}' (columns: {preview(header)}); name it "
            f"with --label-col, e.g. --label-col {_label_candidate(header, options)}"
        )
    if options.tokens is not None:
        return _plan_tokens(header, options, source, label)
    long = options.id_col in header
    if options.categorical and not long:
        raise BadInputError(
            f"{source}: --categorical names columns of a long CSV (one step per row, an "
            f"'{options.id_col}' column); for a whole sequence of tokens in one cell use "
            "--tokens COLUMN"
        )
    if long:
        reserved = reserved_columns(options)
        for name in options.categorical:
            if name not in header or name in reserved:
                what = "is the id, label or time column" if name in reserved else "no such column"
                raise BadInputError(
                    f"{source}: --categorical '{name}': {what} (columns: {preview(header)})"
                )
        values = value_columns(header, options, source, reserved | set(options.categorical))
        if not values and not options.categorical:
            raise BadInputError(
                f"{source}: has no feature columns besides "
                f"'{options.id_col}', '{options.label_col}' and '{options.time_col}'"
            )
        if options.time_features and options.time_col not in header:
            raise BadInputError(
                f"{source}: --time-features needs the time column '{options.time_col}' "
                f"(columns: {preview(header)}); name it with --time-col"
            )
        texts = {options.id_col: CATEGORY, options.time_col: TEXT, label: CATEGORY}
        texts.update(dict.fromkeys(options.categorical, CATEGORY))
    else:
        if options.time_features:
            raise BadInputError(
                f"{source}: --time-features needs a long CSV (an id and a time column); "
                "this one is wide"
            )
        if options.chosen_by == MODEL_FEATURES:
            # A long-CSV model's feature names mean nothing to a wide file: read it whole,
            # and the feature count check says what is wrong.
            options = dataclasses.replace(options, features=())
        values = value_columns(header, options, source, {options.label_col})
        if not values:
            raise BadInputError(f"{source}: has no time-step columns besides the label")
        texts = {label: CATEGORY}
    names = tuple(header[i] for i in values)
    columns = dict.fromkeys(names, NUMBER)
    columns.update((name, kind) for name, kind in texts.items() if name in header)
    return CsvPlan(long, names, columns, label, categorical=options.categorical)


def _plan_tokens(header: list[str], options: ReadOptions, source: str, label: str | None):
    """``--tokens COLUMN``: a row is a sequence, its tokens in one cell; only that column
    and the label are read."""
    column = options.tokens
    if column not in header:
        raise BadInputError(
            f"{source}: --tokens '{column}': no such column (columns: {preview(header)})"
        )
    if column == label:
        raise BadInputError(f"{source}: --tokens '{column}' is the label column")
    if options.categorical:
        raise BadInputError(
            f"{source}: --tokens and --categorical: a file is either one token sequence "
            "per row or one step per row; give one of them"
        )
    columns = {column: TEXT, **({label: CATEGORY} if label is not None else {})}
    return CsvPlan(False, (), columns, label, tokens=column)


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


def _label_candidate(header: list[str], options: ReadOptions) -> str:
    """The column most likely to hold the labels, for an example in a message: the last one
    that is not the id or time column (exports tend to put the target last)."""
    others = [name for name in header if name not in (options.id_col, options.time_col)]
    return (others or header)[-1]


def reserved_columns(options: ReadOptions) -> set[str]:
    """The long-CSV columns that are never features."""
    return {options.id_col, options.label_col, options.time_col}


@dataclasses.dataclass(frozen=True)
class CsvTable:
    """The typed columns of (part of) a CSV file, and where their rows are in it.

    Attributes:
      csv_input: the file, scanned again for a row's line number when a message needs it.
      header: all of the file's column names.
      table: the columns read (``CsvPlan.columns``).
      first_row: the index among the file's data rows of the table's first row.
    """

    csv_input: CsvInput
    header: list[str]
    table: pa.Table
    first_row: int = 0

    @property
    def source(self) -> str:
        return self.csv_input.source

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return column_codes(self.table.column(name))

    def row(self, row: int) -> tuple[int, list[str]]:
        """The line number and cells of ``row``."""
        return row_at(self.csv_input, len(self.header), self.first_row + int(row))

    def where(self, row: int, name: str) -> str:
        return f"{self.source}: row {self.row(row)[0]}, column '{name}'"

    def first_empty(self, codes: np.ndarray, texts: np.ndarray, name: str, problem: str):
        """Raise ``problem`` at the first empty cell of a column of ``codes``."""
        empty = np.flatnonzero(texts == "")
        if empty.size:
            raise BadInputError(f"{self.where(np.argmax(codes == empty[0]), name)}: {problem}")

    def numbers(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """float64[rows, len(names)], empty cells 0 with ``empty`` True; a number that is
        not finite is an error. Each column is copied once, from Arrow's chunks straight
        into its place in the rows."""
        rows = self.table.num_rows
        values = np.empty((rows, len(names)))
        empty = np.zeros(values.shape, dtype=bool)
        first_bad = (rows, 0)  # (row, column) of the first non-finite
        for at, name in enumerate(names):
            column = values[:, at]
            null = column_into(self.table.column(name), column)
            bad = ~np.isfinite(column) if null is None else ~np.isfinite(column) & ~null
            bad = np.flatnonzero(bad)
            if bad.size:
                first_bad = min(first_bad, (int(bad[0]), at))
            if null is not None:
                empty[:, at] = null
                column[null] = 0.0
        row, at = first_bad
        if row < rows:
            cell = self.row(row)[1][self.header.index(names[at])].strip()
            raise BadInputError(f"{self.where(row, names[at])}: {cell} is not a finite number")
        return values, empty


def column_codes(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int32[rows]: each row's code, numbered in order of first appearance; str[codes]:
    their texts, surrounding spaces stripped) of a text or dictionary column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()  # one dictionary for all rows
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    codes = values_of(column.indices, np.int32)[0]
    stripped = pc.dictionary_encode(pc.utf8_trim_whitespace(column.dictionary))
    merged = values_of(stripped.indices, np.int32)[0]
    if (merged != np.arange(len(merged))).any():  # texts that differ only in spaces
        codes = merged[codes]
    first = np.full(len(stripped.dictionary), len(codes))
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1, dtype=np.int32)
    appearance = np.argsort(first, kind="stable")
    if (appearance != np.arange(len(appearance))).any():
        renumber = np.empty_like(codes, shape=len(appearance))
        renumber[appearance] = np.arange(len(appearance))
        codes = renumber[codes]
    texts = np.asarray(stripped.dictionary.to_pylist(), dtype=str)
    used = int((first < len(codes)).sum())  # a slice's dictionary may hold more
    return codes, texts[appearance[:used]]


def _labels(table: CsvTable, plan: CsvPlan) -> tuple[np.ndarray, np.ndarray] | None:
    """The label column's (codes, texts), or None when labels are not read."""
    if plan.label is None:
        return None
    codes, texts = table.codes(plan.label)
    table.first_empty(codes, texts, plan.label, "empty label")
    return codes, texts


def wide_csv(table: CsvTable, options: ReadOptions, plan: CsvPlan) -> SequenceData:
    labels = _labels(table, plan)
    values, empty = table.numbers(plan.values)
    present = ~empty
    lengths = np.where(present.any(axis=1), present.shape[1] - np.argmax(present[:, ::-1], 1), 0)
    if (lengths == 0).any():
        row = int(np.flatnonzero(lengths == 0)[0])
        raise BadInputError(f"{table.source}: row {table.row(row)[0]}: has no values")
    gaps = empty & valid_steps(lengths, len(plan.values))
    if gaps.any():
        row, col = np.argwhere(gaps)[0]
        raise BadInputError(
            f"{table.where(row, plan.values[col])}: empty cell inside the sequence "
            "(only trailing cells may be empty)"
        )
    return SequenceData(
        inputs=values[:, :, None],
        lengths=lengths.astype(np.int64),
        labels=None if labels is None else labels[1][labels[0]],
        ids=list(range(len(values))),
        feature_names=None,
        source_format="wide-csv",
        source=table.source,
    )


def long_csv(table: CsvTable, options: ReadOptions, plan: CsvPlan) -> SequenceData:
    labels = _labels(table, plan)
    values, empty = table.numbers(plan.values)
    if empty.any():
        row, col = np.argwhere(empty)[0]
        raise BadInputError(f"{table.where(row, plan.values[col])}: empty cell (missing value)")
    group, group_ids = table.codes(options.id_col)
    table.first_empty(group, group_ids, options.id_col, "empty id")
    seconds = time_seconds(table, options.time_col) if options.time_features else None
    keys = None
    if options.time_col in plan.columns:
        keys = seconds if seconds is not None else _time_keys(table.table.column(options.time_col))
    order = _sequence_order(group, keys)
    counts = np.bincount(group)
    sorted_group = group[order]
    rows = values[order]
    names = plan.values
    one_length = (counts == counts[0]).all()
    if seconds is not None or not one_length:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.arange(len(sorted_group)) - starts[sorted_group]
    if seconds is not None:
        rows = np.concatenate([rows, _time_features(seconds[order], position, options)], axis=1)
        names += tuple(time_feature_name(options.time_col, k) for k in options.time_features)

    def steps(per_row: np.ndarray, fill: float | int) -> np.ndarray:
        """[sequences, time, ...] from values per row in sequence order."""
        if one_length:  # the rows, in order, are the array
            return per_row.reshape(len(counts), counts[0], *per_row.shape[1:])
        out = np.full((len(counts), int(counts.max()), *per_row.shape[1:]), fill, per_row.dtype)
        out[sorted_group, position] = per_row
        return out

    categories = []
    for name in plan.categorical:
        codes, texts = table.codes(name)
        categories.append(Categories(name, steps(codes[order], -1), texts))
    return SequenceData(
        inputs=steps(rows, 0.0),
        lengths=counts.astype(np.int64),
        labels=None if labels is None else _labels_per_group(table, plan, labels, group, group_ids),
        ids=group_ids.tolist(),
        feature_names=names,
        source_format="long-csv",
        source=table.source,
        categories=tuple(categories),
    )


def token_csv(table: CsvTable, options: ReadOptions, plan: CsvPlan) -> SequenceData:
    """One sequence per row from the tokens of one cell (``--tokens``), split on
    whitespace or into characters (``--token-split``)."""
    labels = _labels(table, plan)
    cells, texts = table.codes(plan.tokens)
    if all(is_number(text) for text in texts.tolist()):
        raise BadInputError(
            f"{table.source}: --tokens '{plan.tokens}': every cell holds one number, not a "
            "sequence of tokens; numbers per step go in a long or wide CSV as features"
        )
    split = token_splitter(options.token_split)
    pieces = [split(text) for text in texts.tolist()]
    sizes = np.array([len(piece) for piece in pieces], dtype=np.int64)
    if (sizes[cells] == 0).any():
        row = int(np.flatnonzero(sizes[cells] == 0)[0])
        raise BadInputError(f"{table.where(row, plan.tokens)}: no tokens (an empty sequence)")
    vocabulary, coded = np.unique(
        np.array([token for piece in pieces for token in piece], dtype=str), return_inverse=True
    )
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lengths = sizes[cells]
    codes = np.full((len(cells), int(lengths.max())), -1, dtype=np.int32)
    row_of = np.repeat(np.arange(len(cells)), lengths)
    position = np.arange(len(row_of)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    codes[row_of, position] = coded[starts[cells][row_of] + position]
    return SequenceData(
        inputs=np.zeros((len(cells), codes.shape[1], 0)),
        lengths=lengths,
        labels=None if labels is None else labels[1][labels[0]],
        ids=list(range(len(cells))),
        feature_names=None,
        source_format="token-csv",
        source=table.source,
        categories=(Categories(plan.tokens, codes, vocabulary),),
    )


def _sequence_order(group: np.ndarray, keys: np.ndarray | None) -> np.ndarray | slice:
    """Rows in sequence order (first appearance), each sequence's rows by ``keys`` (file
    order among equal keys, or without keys); a slice when the file is in that order."""
    in_order = (group[1:] >= group[:-1]).all()
    if in_order and keys is not None:
        in_order = ((keys[1:] >= keys[:-1]) | (group[1:] != group[:-1])).all()
    if in_order:
        return slice(None)
    if keys is None:
        return np.argsort(group, kind="stable")
    return np.lexsort([keys, group])


def time_seconds(table: CsvTable, time_col: str) -> np.ndarray:
    """Each row's time, float64: all numbers as they are, or all ISO-8601 timestamps in
    seconds (all with a UTC offset, or all without); anything else names its row."""
    codes, unique = table.codes(time_col)
    values = [_number_or_timestamp(text) for text in unique.tolist()]
    kinds = np.array([_time_kind(value) for value in values])
    row_kinds = kinds[codes]
    if (row_kinds == "").any():
        row = int(np.flatnonzero(row_kinds == "")[0])
        raise BadInputError(
            f"{table.where(row, time_col)}: '{unique[codes[row]]}' is neither a number nor an "
            "ISO-8601 timestamp (2024-05-01T12:00:00, optionally with +02:00 or Z)"
        )
    if (row_kinds != row_kinds[0]).any():
        row = int(np.flatnonzero(row_kinds != row_kinds[0])[0])
        raise BadInputError(
            f"{table.where(row, time_col)}: '{unique[codes[row]]}' is {row_kinds[row]}, "
            f"'{unique[codes[0]]}' (row {table.row(0)[0]}) {row_kinds[0]}; give every time "
            "the same way"
        )
    if row_kinds[0] == "a number":
        return np.array(values, dtype=np.float64)[codes]
    aware = row_kinds[0] == "a timestamp with a UTC offset"
    origin = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC if aware else None)
    return np.array([(stamp - origin).total_seconds() for stamp in values])[codes]


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


def _time_keys(times: pa.ChunkedArray) -> np.ndarray:
    """Numeric times sort as numbers; anything else (ISO timestamps) sorts as text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return values_of(pc.cast(times, pa.float64()), np.float64)[0]
    except pa.ArrowInvalid:
        pass
    stripped = pc.utf8_trim_whitespace(times).combine_chunks()
    try:
        return values_of(pc.cast(stripped, pa.float64()), np.float64)[0]
    except pa.ArrowInvalid:
        return values_of(pc.rank(stripped, sort_keys="ascending", tiebreaker="dense"), np.uint64)[0]


def _labels_per_group(
    table: CsvTable,
    plan: CsvPlan,
    labels: tuple[np.ndarray, np.ndarray],
    group: np.ndarray,
    group_ids: np.ndarray,
) -> np.ndarray:
    codes, texts = labels
    first = np.zeros(group.max() + 1, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group) - 1, -1, -1, dtype=np.int32)
    per_group = codes[first]
    changed = np.flatnonzero(codes != per_group[group])
    if changed.size:
        row = int(changed[0])
        raise BadInputError(
            f"{table.where(row, plan.label)}: label '{texts[codes[row]]}' differs from "
            f"'{texts[per_group[group[row]]]}' earlier in id '{group_ids[group[row]]}' "
            "(one label per sequence)"
        )
    return texts[per_group]
