"""NPZ and NPY files into ``SequenceData``; a large ``.npy`` stays on disk, memory-mapped.

Every problem a user can fix raises ``BadInputError`` naming the file and the key or
index; a damaged or hostile file (a header that claims terabytes, pickled objects) is
refused before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import mmap
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.lazy import CHUNK_ROWS, LazyInputs
from rnnfc_cli.readers.sequences import (
    Categories,
    ReadOptions,
    SequenceData,
    canonical_labels,
    preview,
    valid_steps,
)

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"

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


def load_npy(path: Path, what: str) -> np.ndarray:
    """A .npy file, memory-mapped: only the parts used are ever read.

    The array is a view of an ``mmap.mmap`` (its ``base``), so that readers can advise
    the kernel how they will read it (see ``LazyInputs``).
    """
    try:
        with path.open("rb") as handle:
            if handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
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


def read_npz(path: Path, options: ReadOptions) -> SequenceData:
    try:
        archive = np.load(path, allow_pickle=False)
    except _NUMPY_LOAD_ERRORS as err:
        raise BadInputError(f"{path}: not a valid .npz file ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise BadInputError(f"{path}: is a .npy array, not an .npz archive; name it .npy")
    with archive:
        keys = set(archive.files)
        if "X" not in keys and TOKENS_KEY not in keys:
            raise BadInputError(
                f"{path}: no key 'X' (or '{TOKENS_KEY}') (keys: {preview(sorted(keys))})"
            )
        if options.require_labels and "y" not in keys:
            raise BadInputError(
                f"{path}: no key 'y' with the labels (keys: {preview(sorted(keys))})"
            )
        arrays = {}
        for key in ("X", "y", "lengths", TOKENS_KEY):
            if key in keys and (key != "y" or options.require_labels):
                try:
                    member = archive.zip.getinfo(f"{key}.npy")
                    with archive.zip.open(member) as handle:
                        _check_declared_size(handle, member.file_size, path, f"key '{key}'")
                    arrays[key] = archive[key]
                except _NUMPY_LOAD_ERRORS as err:
                    what = f"key '{key}'"
                    raise _numpy_load_error(err, path, what, f"{what} is unreadable") from None
    tokens = arrays.get(TOKENS_KEY)
    if tokens is None:
        return _from_arrays(
            arrays["X"], arrays.get("y"), arrays.get("lengths"), str(path), "npz", "key 'y'"
        )
    return _with_tokens(tokens, arrays, str(path))


# The NPZ key of integer token codes: int[N, T] (or [N, T, C], one column per last index),
# -1 (or any negative code) past each sequence's end unless ``lengths`` says where it is.
TOKENS_KEY = "tokens"


def _with_tokens(tokens: np.ndarray, arrays: dict[str, np.ndarray], source: str) -> SequenceData:
    """An NPZ archive with integer token codes (``TOKENS_KEY``), and numbers per step in
    ``X`` beside them or not."""
    if tokens.dtype.kind not in "iu":
        raise BadInputError(
            f"{source}: key '{TOKENS_KEY}' has dtype {tokens.dtype}; expected integer codes"
        )
    if tokens.ndim not in (2, 3) or 0 in tokens.shape:
        raise BadInputError(
            f"{source}: key '{TOKENS_KEY}' has shape {tokens.shape}; expected (N, T) or (N, T, C)"
        )
    codes = tokens if tokens.ndim == 3 else tokens[:, :, None]
    n, steps, columns = codes.shape
    lengths = arrays.get("lengths")
    if lengths is None:
        present = (codes >= 0).any(axis=2)
        lengths = np.where(present.any(axis=1), steps - np.argmax(present[:, ::-1], 1), 0)
        if (lengths == 0).any():
            row = int(np.flatnonzero(lengths == 0)[0])
            raise BadInputError(f"{source}: {TOKENS_KEY}[{row}] has no codes >= 0 (empty)")
    lengths = _check_lengths(np.asarray(lengths), n, steps, source)
    valid = valid_steps(lengths, steps)
    negative = (codes < 0) & valid[:, :, None]
    if negative.any():
        i, t, c = np.argwhere(negative)[0]
        raise BadInputError(
            f"{source}: {TOKENS_KEY}[{i}, {t}, {c}] is {codes[i, t, c]} inside the sequence "
            f"(length {lengths[i]}); codes are >= 0, negative ones only pad"
        )
    if "X" in arrays:
        data = _from_arrays(arrays["X"], arrays.get("y"), lengths, source, "npz", "key 'y'")
        if data.inputs.shape[:2] != (n, steps):
            raise BadInputError(
                f"{source}: X has shape {data.inputs.shape[:2]} (N, T) but "
                f"{TOKENS_KEY} {(n, steps)}; give both the same"
            )
    else:
        labels = arrays.get("y")
        data = SequenceData(
            inputs=np.zeros((n, steps, 0)),
            lengths=lengths.astype(np.int64),
            labels=None if labels is None else _checked_labels(labels, n, source, "key 'y'"),
            ids=list(range(n)),
            feature_names=None,
            source_format="npz",
            source=source,
        )
    names = [TOKENS_KEY] if columns == 1 else [f"{TOKENS_KEY}:{c}" for c in range(columns)]
    categories = []
    for c, name in enumerate(names):
        column = np.where(valid, codes[:, :, c], -1)
        values, coded = np.unique(column[valid], return_inverse=True)
        local = np.full(column.shape, -1, np.int32)
        local[valid] = coded
        categories.append(Categories(name, local, values.astype(str)))
    return dataclasses.replace(data, categories=tuple(categories))


# A .npy file at least this large stays on disk (memory-mapped, read per batch); smaller
# ones are read into memory, which is faster per epoch.
LAZY_MIN_BYTES = 256 * 2**20


def read_npy(path: Path, options: ReadOptions) -> SequenceData:
    inputs = load_npy(path, "X")
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
        return load_npy(file, "the labels array")
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
