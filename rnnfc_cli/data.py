"""Read sequences from wide CSV, long CSV, NPZ and NPY into one validated structure.

NumPy only. Every problem a user can fix raises ``BadInputError`` with a message that
names the file and the place (row and column for CSV, key and index for NumPy files).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import mmap
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnfc_cli import csv_cache
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.lazy import CHUNK_ROWS, LazyInputs

STDIN = "-"
_INT_LABEL = re.compile(r"[+-]?\d+")
_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """Where the parts of a table live and what must be there.

    Attributes:
      label_col: CSV column holding the class.
      id_col: CSV column whose presence marks the long format and groups its rows.
      time_col: long-CSV column that orders the rows of a sequence, when present.
      labels_file: labels for a ``.npy`` input (a ``.npy`` array or one label per line).
      require_labels: train and eval need labels; predict ignores them.
    """

    label_col: str = "label"
    id_col: str = "id"
    time_col: str = "time"
    labels_file: str | None = None
    require_labels: bool = True


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """Padded sequences with their lengths and, when known, their labels.

    Attributes:
      inputs: float64[n, time, features]; steps at or past a sequence's length are 0.
        A large ``.npy`` input stays on disk instead, as ``LazyInputs`` over its memory map.
      lengths: int64[n], each in [1, time].
      labels: canonical label strings [n] (integers written without a decimal point),
        or None when the input has no labels.
      ids: one identifier per sequence: the long-CSV id, else the 0-based index.
      feature_names: CSV feature column names (long format), else None.
      source_format: "wide-csv", "long-csv", "npz" or "npy".
      source: the file name used in messages.
    """

    inputs: np.ndarray | LazyInputs
    lengths: np.ndarray
    labels: np.ndarray | None
    ids: list[str] | list[int]
    feature_names: tuple[str, ...] | None
    source_format: str
    source: str

    @property
    def num_features(self) -> int:
        return int(self.inputs.shape[2])

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, index: np.ndarray) -> SequenceData:
        """The sequences at ``index``, trimmed to their own longest length."""
        lengths = self.lengths[index]
        max_len = int(lengths.max()) if len(lengths) else 1
        inputs = (
            self.inputs.subset(index)
            if isinstance(self.inputs, LazyInputs)
            else self.inputs[index, :max_len]
        )
        return dataclasses.replace(
            self,
            inputs=inputs,
            lengths=lengths,
            labels=None if self.labels is None else self.labels[index],
            ids=[self.ids[i] for i in index],
        )


def read_sequences(path: str, options: ReadOptions | None = None) -> SequenceData:
    """Read any supported file (or ``-`` for CSV on stdin) into ``SequenceData``."""
    options = options or ReadOptions()
    if path == STDIN:
        return _read_csv(sys.stdin.buffer.read(), "<stdin>", options)
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
    if kind == "npz":
        return _read_npz(file, options)
    if kind == "npy":
        return _read_npy(file, options)
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    if file.stat().st_size >= csv_cache.MIN_BYTES:
        cached = csv_cache.cached(file, options, delimiter)
        if cached is not None:
            return cached
    return _read_csv(file.read_bytes(), str(file), options, delimiter)


def valid_steps(lengths: np.ndarray, steps: int) -> np.ndarray:
    """bool[n, steps]: which steps of each padded sequence hold data (the first
    ``lengths[i]``)."""
    return np.arange(steps)[None, :] < lengths[:, None]


def _detect_format(file: Path, head: bytes) -> str:
    suffix = file.suffix.lower()
    if head.startswith(_GZIP_MAGIC):
        raise BadInputError(f"{file}: is gzip-compressed; decompress it first (gunzip)")
    if suffix == ".npz" or (suffix not in (".csv", ".npy") and head.startswith(_ZIP_MAGIC)):
        return "npz"
    if suffix == ".npy" or (suffix != ".csv" and head.startswith(_NPY_MAGIC)):
        return "npy"
    if suffix in (".csv", ".txt", ".tsv") or not suffix:
        return "csv"
    raise BadInputError(
        f"{file}: unknown format '{suffix}': rnnfc reads .csv, .tsv, .txt, .npz and .npy files, "
        "or '-' for CSV on stdin; convert it to one of those"
    )


# --- CSV -----------------------------------------------------------------------------------


def _read_csv(raw: bytes, source: str, options: ReadOptions, delimiter: str = ",") -> SequenceData:
    text = _decode_text(raw, source)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise BadInputError(f"{source}: is empty; expected a header row and data rows")
        header = [name.strip() for name in header]
        _check_header(header, source)
    except csv.Error as err:
        raise BadInputError(f"{source}: row {reader.line_num}: {err}") from None
    rows, row_numbers = [], []
    for line, row in csv_rows(reader, len(header), source):
        rows.append(row)
        row_numbers.append(line)
    if not rows:
        raise BadInputError(f"{source}: has a header but no data rows")
    table = _CsvTable(source, header, np.array(rows, dtype=str), np.asarray(row_numbers))
    if options.id_col in header:
        return _long_csv(table, options)
    return _wide_csv(table, options)


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


def _decode_text(raw: bytes, source: str) -> str:
    """UTF-8 (with or without a byte-order mark), or UTF-16 marked by its byte-order mark
    (what spreadsheets save as "Unicode text"); anything else is refused with its place."""
    if raw.startswith(_GZIP_MAGIC):
        raise BadInputError(f"{source}: is gzip-compressed; decompress it first (gunzip)")
    encoding = "utf-16" if raw.startswith(_UTF16_BOMS) else "utf-8-sig"
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


def _check_header(header: list[str], source: str) -> None:
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


@dataclasses.dataclass(frozen=True)
class _CsvTable:
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


def _csv_labels(table: _CsvTable, options: ReadOptions) -> np.ndarray | None:
    if options.label_col not in table.header:
        if options.require_labels:
            raise BadInputError(
                f"{table.source}: no label column '{options.label_col}' "
                f"(columns: {_preview(table.header)}); name it with --label-col, e.g. "
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


def _wide_csv(table: _CsvTable, options: ReadOptions) -> SequenceData:
    labels = _csv_labels(table, options)
    steps = [i for i, name in enumerate(table.header) if name != options.label_col]
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


def _long_csv(table: _CsvTable, options: ReadOptions) -> SequenceData:
    labels = _csv_labels(table, options)
    special = {options.id_col, options.label_col, options.time_col}
    features = [i for i, name in enumerate(table.header) if name not in special]
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
    order_keys = [group]
    if options.time_col in table.header:
        order_keys.insert(0, _time_keys(table, options.time_col))
    order = np.lexsort(order_keys)
    counts = np.bincount(group)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(order)) - starts[group[order]]
    inputs = np.zeros((len(counts), int(counts.max()), len(features)))
    inputs[group[order], position] = values[order]
    if labels is not None:
        labels = _labels_per_group(table, options, labels, group, unique_ids[appearance])
    return SequenceData(
        inputs=inputs,
        lengths=counts.astype(np.int64),
        labels=labels,
        ids=[str(i) for i in unique_ids[appearance]],
        feature_names=tuple(table.header[i] for i in features),
        source_format="long-csv",
        source=table.source,
    )


def _time_keys(table: _CsvTable, time_col: str) -> np.ndarray:
    """Numeric times sort as numbers; anything else (ISO timestamps) sorts as text."""
    times = table.column(time_col)
    try:
        return times.astype(np.float64)
    except ValueError:
        return np.unique(times, return_inverse=True)[1]


def _labels_per_group(
    table: _CsvTable,
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


# --- NumPy ---------------------------------------------------------------------------------


# np.load on a damaged file raises a zoo of types, tokenize.TokenError and SyntaxError from
# parsing the header among them (found by fuzzing), so every Exception counts as damage.
_NUMPY_LOAD_ERRORS = (Exception,)


def _numpy_load_error(err: Exception, path: Path, what: str, invalid: str) -> BadInputError:
    """The user-facing error for a failed ``np.load``: pickled objects get their own words."""
    if isinstance(err, BadInputError):
        return err
    if isinstance(err, ValueError) and "allow_pickle" in str(err):
        return BadInputError(
            f"{path}: {what} holds Python objects (pickled); save a numeric or string array"
        )
    return BadInputError(f"{path}: {invalid} ({err})")


@dataclasses.dataclass(frozen=True)
class _NpyHeader:
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int


def _check_declared_size(handle: BinaryIO, size: int, path: Path, what: str) -> _NpyHeader | None:
    """Refuse an array whose header declares more bytes than the file holds (truncated,
    or a header claiming terabytes) before anything is allocated for it. Returns the
    header (None for versions other than 1.0 and 2.0, which ``np.load`` checks itself)."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            return None
    except _NUMPY_LOAD_ERRORS as err:
        raise BadInputError(f"{path}: {what}: not a valid .npy header ({err})") from None
    if dtype.hasobject:
        return None  # np.load refuses pickled objects with its own message
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = size - handle.tell()
    if declared > available:
        raise BadInputError(
            f"{path}: {what}: the header declares shape {shape} of {dtype} "
            f"({_bytes(declared)}) but only {_bytes(available)} follow; truncated or corrupt"
        )
    return _NpyHeader(tuple(shape), fortran, dtype, handle.tell())


def _bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _load_npy(path: Path, what: str) -> np.ndarray:
    """A .npy file, memory-mapped: only the parts used are ever read.

    The array is a view of an ``mmap.mmap`` (its ``base``), so that readers can advise
    the kernel how they will read it (see ``LazyInputs``).
    """
    try:
        with path.open("rb") as handle:
            if handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
                raise BadInputError(f"{path}: is an .npz archive, not a .npy array; name it .npz")
            handle.seek(0)
            header = _check_declared_size(handle, path.stat().st_size, path, what)
            if header is not None and 0 not in header.shape:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                order = "F" if header.fortran else "C"
                return np.ndarray(
                    header.shape, header.dtype, buffer=mapped, offset=header.offset, order=order
                )
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except _NUMPY_LOAD_ERRORS as err:
        raise _numpy_load_error(err, path, what, "not a valid .npy file") from None


def _read_npz(path: Path, options: ReadOptions) -> SequenceData:
    try:
        archive = np.load(path, allow_pickle=False)
    except _NUMPY_LOAD_ERRORS as err:
        raise BadInputError(f"{path}: not a valid .npz file ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise BadInputError(f"{path}: is a .npy array, not an .npz archive; name it .npy")
    with archive:
        keys = set(archive.files)
        if "X" not in keys:
            raise BadInputError(f"{path}: no key 'X' (keys: {_preview(sorted(keys))})")
        if options.require_labels and "y" not in keys:
            raise BadInputError(
                f"{path}: no key 'y' with the labels (keys: {_preview(sorted(keys))})"
            )
        arrays = {}
        for key in ("X", "y", "lengths"):
            if key in keys and (key != "y" or options.require_labels):
                try:
                    member = archive.zip.getinfo(f"{key}.npy")
                    with archive.zip.open(member) as handle:
                        _check_declared_size(handle, member.file_size, path, f"key '{key}'")
                    arrays[key] = archive[key]
                except _NUMPY_LOAD_ERRORS as err:
                    what = f"key '{key}'"
                    raise _numpy_load_error(err, path, what, f"{what} is unreadable") from None
    return _from_arrays(
        arrays["X"], arrays.get("y"), arrays.get("lengths"), str(path), "npz", "key 'y'"
    )


# A .npy file at least this large stays on disk (memory-mapped, read per batch); smaller
# ones are read into memory, which is faster per epoch.
LAZY_MIN_BYTES = 256 * 2**20


def _read_npy(path: Path, options: ReadOptions) -> SequenceData:
    inputs = _load_npy(path, "X")
    labels, labels_name = None, ""
    if options.require_labels:
        if options.labels_file is None:
            raise BadInputError(
                f"{path}: a .npy file holds no labels; give them with --labels FILE "
                "(or use .npz with keys X and y)"
            )
        labels, labels_name = read_label_file(options.labels_file), options.labels_file
    if inputs.nbytes >= LAZY_MIN_BYTES:
        return _lazy_from_array(inputs, labels, str(path), labels_name)
    return _from_arrays(inputs, labels, None, str(path), "npy", labels_name)


def read_label_file(path: str) -> np.ndarray:
    """Labels for a ``.npy`` input: a ``.npy`` array or a text file with one label per line."""
    file = Path(path)
    if not file.is_file():
        raise BadInputError(f"{path}: no such labels file")
    if file.suffix.lower() == ".npy":
        return _load_npy(file, "the labels array")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not UTF-8 text; save the labels file as UTF-8") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return np.array([line.strip() for line in lines], dtype=str)


def _from_arrays(
    inputs: np.ndarray,
    labels: np.ndarray | None,
    lengths: np.ndarray | None,
    source: str,
    source_format: str,
    labels_name: str,
) -> SequenceData:
    _check_array(inputs, source)
    if inputs.ndim == 2:
        inputs = inputs[:, :, None]
    inputs = inputs.astype(np.float64)
    n, steps = inputs.shape[:2]
    if lengths is None:
        lengths = _padded_lengths(inputs, 0, source)
    else:
        lengths = _check_lengths(lengths, n, steps, source)
    _check_finite(inputs, lengths, 0, source)
    valid = valid_steps(lengths, steps)
    inputs = np.where(valid[:, :, None], inputs, 0.0)
    if labels is not None:
        labels = _checked_labels(labels, n, source, labels_name)
    return SequenceData(
        inputs=inputs,
        lengths=lengths.astype(np.int64),
        labels=labels,
        ids=list(range(n)),
        feature_names=None,
        source_format=source_format,
        source=source,
    )


def _check_array(inputs: np.ndarray, source: str) -> None:
    if inputs.dtype.kind not in "fiub":
        raise BadInputError(f"{source}: X has dtype {inputs.dtype}; expected numbers")
    if inputs.ndim not in (2, 3):
        raise BadInputError(f"{source}: X has shape {inputs.shape}; expected (N, T) or (N, T, F)")
    if 0 in inputs.shape:
        raise BadInputError(f"{source}: X has shape {inputs.shape}; it holds no values")


def _padded_lengths(block: np.ndarray, first_row: int, source: str) -> np.ndarray:
    """Lengths of float64[b, T, F] sequences whose padding is trailing all-NaN steps."""
    steps = block.shape[1]
    present = ~np.isnan(block).all(axis=2)
    lengths = np.where(present.any(axis=1), steps - np.argmax(present[:, ::-1], 1), 0)
    if (lengths == 0).any():
        row = first_row + int(np.flatnonzero(lengths == 0)[0])
        raise BadInputError(f"{source}: X[{row}] is all NaN (an empty sequence)")
    return lengths


def _check_finite(block: np.ndarray, lengths: np.ndarray, first_row: int, source: str) -> None:
    valid = valid_steps(lengths, block.shape[1])
    bad = ~np.isfinite(block) & valid[:, :, None]
    if bad.any():
        i, t, f = np.argwhere(bad)[0]
        raise BadInputError(
            f"{source}: X[{first_row + i}, {t}, {f}] is {block[i, t, f]} inside the sequence "
            f"(length {lengths[i]}); only trailing all-NaN steps may pad"
        )


def _lazy_from_array(
    inputs: np.ndarray, labels: np.ndarray | None, source: str, labels_name: str
) -> SequenceData:
    """Like ``_from_arrays`` for a memory-mapped ``X``: checked block by block, kept on disk."""
    _check_array(inputs, source)
    n = inputs.shape[0]
    lengths = np.empty(n, np.int64)
    for start in range(0, n, CHUNK_ROWS):
        block = np.asarray(inputs[start : start + CHUNK_ROWS], dtype=np.float64)
        block = block.reshape(block.shape[0], block.shape[1], -1)
        lengths[start : start + len(block)] = _padded_lengths(block, start, source)
        _check_finite(block, lengths[start : start + len(block)], start, source)
    if labels is not None:
        labels = _checked_labels(labels, n, source, labels_name)
    return SequenceData(
        inputs=LazyInputs.of(inputs, lengths),
        lengths=lengths,
        labels=labels,
        ids=list(range(n)),
        feature_names=None,
        source_format="npy",
        source=source,
    )


def _checked_labels(labels: np.ndarray, n: int, source: str, labels_name: str) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != n:
        raise BadInputError(
            f"{source}: X holds {n} sequences but {labels_name} has shape {labels.shape}"
        )
    return canonical_labels(np.asarray(labels), f"{source}: {labels_name}")


def _check_lengths(lengths: np.ndarray, n: int, steps: int, source: str) -> np.ndarray:
    if lengths.shape != (n,):
        raise BadInputError(f"{source}: lengths has shape {lengths.shape}; expected ({n},)")
    if lengths.dtype.kind not in "iu":
        raise BadInputError(f"{source}: lengths has dtype {lengths.dtype}; expected integers")
    out_of_range = np.flatnonzero((lengths < 1) | (lengths > steps))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise BadInputError(
            f"{source}: lengths[{i}] is {lengths[i]}; each length must be in 1..{steps}"
        )
    return lengths


# --- Labels --------------------------------------------------------------------------------


def canonical_labels(labels: np.ndarray, where: str = "labels") -> np.ndarray:
    """Labels as strings, integers written without a decimal point (``1.0`` -> ``1``)."""
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    if labels.dtype.kind in "iu":
        return labels.astype(str)
    if labels.dtype.kind == "f":
        return _integral_floats(labels, where)
    if labels.dtype.kind not in "US":
        raise BadInputError(f"{where}: has dtype {labels.dtype}; expected integers or strings")
    text = np.char.strip(labels.astype(str))
    try:
        numbers = text.astype(np.float64)
    except ValueError:
        return text
    if np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)):
        return numbers.astype(np.int64).astype(str)
    return text


def _integral_floats(labels: np.ndarray, where: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    if bad.size:
        i = int(bad[0])
        raise BadInputError(
            f"{where}[{i}] is {labels[i]}; class labels must be integers or strings"
        )
    return labels.astype(np.int64).astype(str)


def label_kind(labels: Sequence[str]) -> str:
    """ "int" when every label is an integer, so outputs can speak integers again."""
    return "int" if all(_INT_LABEL.fullmatch(label) for label in labels) else "str"


def sorted_vocabulary(labels: np.ndarray) -> tuple[str, ...]:
    """Distinct labels, integers in numeric order, strings in lexical order."""
    unique = np.unique(labels).tolist()
    if label_kind(unique) == "int":
        return tuple(sorted(unique, key=int))
    return tuple(unique)


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
