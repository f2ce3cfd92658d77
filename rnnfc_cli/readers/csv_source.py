"""CSV text into typed Arrow columns, with the row and column of every problem.

pyarrow's reader parses the columns a read needs (value columns as float64 with empty
cells null; id, label and time columns as text) on every core; it is imported only when
a CSV file is read. Its errors name no row, so when it refuses a file the same columns
are read again by Python's ``csv`` module (``python_batches``), which names the row and
column of a ragged row, undecodable bytes or a cell that is not a number, and reads what
pyarrow alone refuses (a cell of spaces) as an empty cell. Later checks find a problem
by its index among the data rows; ``row_at`` scans the file again for that row's line
number and cells, so the fast path keeps no line numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnfc_cli.errors import BadInputError

if TYPE_CHECKING:
    import pyarrow as pa

UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
GZIP_MAGIC = b"\x1f\x8b"
HEAD_BYTES = 65536
PYTHON_BLOCK_ROWS = 100_000
# What a column is read as: float64 (empty cells null), text, or text dictionary-encoded
# while parsing (ids and labels: few distinct values, one small integer per row).
NUMBER, TEXT, CATEGORY = "number", "text", "category"


class CsvInput:
    """A CSV file or stdin's bytes, its encoding (UTF-8, or UTF-16 by its byte-order mark)
    checked on the first ``HEAD_BYTES``, and its delimiter."""

    def __init__(
        self, source: str, path: Path | None = None, raw: bytes | None = None, delimiter=","
    ):
        self.source, self.path, self.raw, self.delimiter = source, path, raw, delimiter
        if raw is None:
            with path.open("rb") as handle:
                head = handle.read(HEAD_BYTES + 1)
        else:
            head = raw[: HEAD_BYTES + 1]
        if head.startswith(GZIP_MAGIC):
            raise BadInputError(f"{source}: is gzip-compressed; decompress it first (gunzip)")
        self.encoding = "utf-16" if head.startswith(UTF16_BOMS) else "utf-8-sig"
        whole = len(head) <= HEAD_BYTES
        if not whole:  # cut after a newline, so that a character cut in two is no damage
            head = head[: head.rfind(b"\n") + 1]
        if whole or self.encoding != "utf-16":  # a UTF-16 newline byte may be half a character
            _check_encoding(head, source)

    def binary(self):
        return io.BytesIO(self.raw) if self.raw is not None else self.path.open("rb")

    def text(self):
        """The decoded text, for Python's csv module."""
        return io.TextIOWrapper(self.binary(), encoding=self.encoding, newline="")

    def arrow_source(self):
        import pyarrow as pa

        return pa.py_buffer(self.raw) if self.raw is not None else str(self.path)


def _check_encoding(head: bytes, source: str) -> None:
    """Refuse NUL bytes, UTF-16 without a byte-order mark and bytes that are not UTF-8 in
    ``head``, naming the row."""
    encoding = "utf-16" if head.startswith(UTF16_BOMS) else "utf-8-sig"
    try:
        text = head.decode(encoding)
    except UnicodeDecodeError as err:
        raise _undecodable(head, err, encoding, source) from None
    if "\x00" in text:
        if head[1:2] == b"\x00" or head[0:1] == b"\x00":
            raise BadInputError(
                f"{source}: looks like UTF-16 without a byte-order mark; save it as UTF-8"
            )
        raise BadInputError(f"{source}: contains NUL bytes; is it a binary file?")


def _undecodable(raw: bytes, err: UnicodeDecodeError, encoding: str, source: str):
    line = raw[: err.start].count(b"\n") + 1
    name = "UTF-16" if encoding == "utf-16" else "UTF-8"
    return BadInputError(
        f"{source}: row {line}: not {name} text (byte 0x{raw[err.start]:02x}); "
        "save the file as UTF-8"
    )


def _first_undecodable(csv_input: CsvInput) -> BadInputError:
    """The error naming the first line that does not decode (the decoder reads ahead in
    blocks, so the csv module's line number is not where the damage is)."""
    if csv_input.encoding == "utf-16":
        return BadInputError(f"{csv_input.source}: not UTF-16 text; save the file as UTF-8")
    with csv_input.binary() as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return BadInputError(
                    f"{csv_input.source}: row {number}: not UTF-8 text (byte "
                    f"0x{line[err.start]:02x}); save the file as UTF-8"
                )
    return BadInputError(f"{csv_input.source}: not UTF-8 text; save the file as UTF-8")


def read_header(csv_input: CsvInput) -> list[str]:
    """The column names, stripped; blank or repeated names are errors."""
    source = csv_input.source
    with csv_input.text() as text:
        reader = csv.reader(text, delimiter=csv_input.delimiter)
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise BadInputError(f"{source}: row {reader.line_num}: {err}") from None
        except UnicodeDecodeError:
            raise _first_undecodable(csv_input) from None
    if header is None or not any(cell.strip() for cell in header):
        raise BadInputError(f"{source}: is empty; expected a header row and data rows")
    header = [name.strip() for name in header]
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
    return header


def read_table(csv_input: CsvInput, header: list[str], columns: Mapping[str, str]) -> pa.Table:
    """All rows of ``columns`` (name -> NUMBER, TEXT or CATEGORY), named as in ``header``."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        if len(header) == 1:
            raise pa.ArrowInvalid("one column")  # see _skip_blank_rows
        table = pa_csv.read_csv(
            csv_input.arrow_source(), **_arrow_options(csv_input, header, columns)
        )
    except pa.ArrowInvalid:
        return pa.Table.from_batches(list(python_batches(csv_input, header, columns)))
    return table.rename_columns(list(columns))


def arrow_batches(
    csv_input: CsvInput, header: list[str], columns: Mapping[str, str], block_bytes: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of about ``block_bytes`` of text each, streamed by pyarrow; raises
    ``pyarrow.ArrowInvalid`` where it refuses the file (read it with ``python_batches``)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    if len(header) == 1:
        raise pa.ArrowInvalid("one column")  # see _skip_blank_rows
    options = _arrow_options(csv_input, header, columns, block_bytes)
    with pa_csv.open_csv(csv_input.arrow_source(), **options) as reader:
        for batch in reader:
            yield batch.rename_columns(list(columns))


def _arrow_options(
    csv_input: CsvInput, header: list[str], columns: Mapping[str, str], block_bytes=None
) -> dict:
    import pyarrow.csv as pa_csv

    # pyarrow names columns as the file spells them; ours are stripped.
    with csv_input.text() as text:
        spelled = next(csv.reader(text, delimiter=csv_input.delimiter))
    position = positions(header)
    raw = {name: spelled[position[name]] for name in columns}
    read = pa_csv.ReadOptions(encoding="utf-16" if csv_input.encoding == "utf-16" else "utf8")
    if block_bytes:
        read.block_size = block_bytes
    return {
        "read_options": read,
        "parse_options": pa_csv.ParseOptions(
            delimiter=csv_input.delimiter, invalid_row_handler=_skip_blank_rows
        ),
        "convert_options": pa_csv.ConvertOptions(
            column_types={raw[name]: _arrow_type(kind) for name, kind in columns.items()},
            include_columns=[raw[name] for name in columns],
            null_values=[""],
            strings_can_be_null=False,
        ),
    }


def positions(header: list[str]) -> dict[str, int]:
    """Each column name's index in ``header``, the first where a name repeats (as
    ``list.index`` gives, in one pass: files may have 100,000 columns)."""
    position: dict[str, int] = {}
    for i, name in enumerate(header):
        position.setdefault(name, i)
    return position


def _arrow_type(kind: str) -> pa.DataType:
    import pyarrow as pa

    return {
        NUMBER: pa.float64(),
        TEXT: pa.string(),
        CATEGORY: pa.dictionary(pa.int32(), pa.string()),
    }[kind]


def values_of(array: pa.Array | pa.ChunkedArray, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, null mask or None when nothing is null) of a fixed-width Arrow array, as
    NumPy views of its buffers (a null's value is undefined). pyarrow's own ``to_numpy``
    imports pandas, which would add 0.2 s to every CSV read."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    bitmap, data = array.buffers()[:2]
    dtype = np.dtype(dtype)
    values = np.frombuffer(data, dtype, count=len(array), offset=array.offset * dtype.itemsize)
    if bitmap is None or array.null_count == 0:
        return values, None
    valid = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    return values, valid[array.offset : array.offset + len(array)] == 0


def column_into(array: pa.Array | pa.ChunkedArray, out: np.ndarray) -> np.ndarray | None:
    """Copy a fixed-width Arrow column, chunk by chunk, into ``out`` (which may be a
    strided view: a column of a row-major array); returns its null mask, or None when
    nothing is null (a null's value in ``out`` is undefined)."""
    import pyarrow as pa

    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    nulls, start = None, 0
    for chunk in chunks:
        values, null = values_of(chunk, out.dtype)
        out[start : start + len(chunk)] = values
        if null is not None:
            if nulls is None:
                nulls = np.zeros(len(out), dtype=bool)
            nulls[start : start + len(chunk)] = null
        start += len(chunk)
    return nulls


def _skip_blank_rows(row) -> str:
    """Rows of spaces are skipped, as blank lines are; any other ragged row stops pyarrow.
    (With one column no row is ragged, and pyarrow would keep what ``data_rows`` skips: a
    file of one column is read by Python's csv module.)"""
    return "skip" if not row.text.strip() else "error"


def python_batches(
    csv_input: CsvInput,
    header: list[str],
    columns: Mapping[str, str],
    block_rows: int = PYTHON_BLOCK_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The same record batches as pyarrow's, parsed by Python's csv module: slower, and
    every problem is an error naming its row (and column)."""
    import pyarrow as pa

    position = positions(header)
    indices = [position[name] for name in columns]
    schema = pa.schema([(name, _arrow_type(kind)) for name, kind in columns.items()])
    block: list[tuple[int, list[str]]] = []
    produced = False
    for line, row in data_rows(csv_input, len(header)):
        block.append((line, row))
        if len(block) >= block_rows:
            yield _typed_batch(csv_input.source, header, block, indices, columns, schema)
            block, produced = [], True
    if block or not produced:
        yield _typed_batch(csv_input.source, header, block, indices, columns, schema)


def _typed_batch(source, header, block, indices, columns, schema) -> pa.RecordBatch:
    import pyarrow as pa

    cells = np.array([row for _, row in block], dtype=str).reshape(len(block), len(header))
    numeric = [
        index for index, kind in zip(indices, columns.values(), strict=True) if kind == NUMBER
    ]
    stripped = np.char.strip(cells[:, numeric])
    empty = stripped == ""
    try:
        values = np.where(empty, "0", stripped).astype(np.float64)
    except ValueError:
        (row, column), cell = next(
            (place, cell)
            for place, cell in np.ndenumerate(stripped)
            if cell and not is_number(cell)
        )
        name = header[numeric[column]]
        where = f"{source}: row {block[row][0]}, column '{name}'"
        raise not_a_number(where, cell, name) from None
    arrays, at = [], 0
    for index, kind in zip(indices, columns.values(), strict=True):
        if kind != NUMBER:
            text = pa.array(cells[:, index].tolist(), pa.string())
            arrays.append(text.dictionary_encode() if kind == CATEGORY else text)
        else:  # the numeric columns come in the order of ``numeric``
            arrays.append(pa.array(values[:, at], pa.float64(), mask=empty[:, at]))
            at += 1
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def is_number(cell: str) -> bool:
    try:
        np.float64(cell)
    except ValueError:
        return False
    return True


def not_a_number(where: str, cell: str, name: str) -> BadInputError:
    return BadInputError(
        f"{where}: '{cell}' is not a number; feature columns hold numbers (if '{name}' "
        f"holds categories, use --categorical {name}; if it holds the class, add --label-col "
        f"{name}; else remove the column)"
    )


def data_rows(csv_input: CsvInput, fields: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each row after the header, blank rows skipped; a row with
    another number of fields than the header's, or text that does not decode, is an error
    naming its line."""
    source = csv_input.source
    with csv_input.text() as text:
        reader = csv.reader(text, delimiter=csv_input.delimiter)
        try:
            next(reader, None)
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
        except UnicodeDecodeError:
            raise _first_undecodable(csv_input) from None


def row_at(csv_input: CsvInput, fields: int, index: int) -> tuple[int, list[str]]:
    """The line number and cells of the data row at ``index`` (0-based), for messages."""
    for position, found in enumerate(data_rows(csv_input, fields)):
        if position == index:
            return found
    raise IndexError(index)
