"""What every reader returns: padded sequences, their lengths and labels, and the options
that say where those are in a file."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.lazy import LazyInputs

_INT_LABEL = re.compile(r"[+-]?\d+")


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """Where the parts of a table live and what must be there.

    Attributes:
      label_col: CSV column holding the class.
      id_col: CSV column whose presence marks the long format and groups its rows.
      time_col: long-CSV column that orders the rows of a sequence, when present.
        (For eval and predict each of the three may be None: the model's, see
        ``preprocessing.read_options``.)
      labels_file: labels for a ``.npy`` input (a ``.npy`` array or one label per line).
      require_labels: train and eval need labels; predict ignores them.
      features: the CSV columns that hold values (long: features; wide: time steps), in
        this order, as names or glob patterns (each pattern's matches in file order);
        empty: every column but the id, time and label columns. A pattern that matches
        no column is an error.
      ignore: CSV columns left out, as names or glob patterns; one that matches nothing
        is no error (a file read later may lack the column).
      chosen_by: who chose ``features``, as messages name it: "--features", or the model
        (``preprocessing.read_options``).
      time_features: features derived from a long CSV's time column, appended after the
        others in this order: "gap" (log1p of the time since the sequence's previous step,
        0 at its first) and "elapsed" (log1p of the time since its first step); times are
        numbers, or ISO-8601 timestamps counted in seconds.
      categorical: long-CSV columns whose cells are categories (strings or integer codes),
        read as ``SequenceData.categories``, not as numbers.
      tokens: a CSV column whose every cell is a whole sequence of tokens, one sequence
        per row (the label beside it); the other columns are not read.
      token_split: how a ``tokens`` cell splits: "space" (on runs of whitespace) or "char"
        (every character a token: DNA, protein, codes).
    """

    label_col: str | None = "label"
    id_col: str | None = "id"
    time_col: str | None = "time"
    labels_file: str | None = None
    require_labels: bool = True
    features: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    chosen_by: str = "--features"
    time_features: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    tokens: str | None = None
    token_split: str = "space"

    @property
    def selects_columns(self) -> bool:
        return bool(self.features or self.ignore)


def token_splitter(split: str) -> Callable[[str], list[str]]:
    """How a ``--tokens`` cell becomes its tokens: ``split`` "char" (every character a
    token), else on runs of whitespace."""
    return list if split == "char" else str.split


@dataclasses.dataclass(frozen=True)
class Categories:
    """The tokens of one categorical column (or a token column), coded by this file.

    Attributes:
      name: the column.
      codes: int32[n, time]: each step's index into ``texts``, -1 past a sequence's end.
      texts: the distinct tokens as written (spaces around them stripped; "" for an empty
        cell, a category of its own).
    """

    name: str
    codes: np.ndarray
    texts: np.ndarray

    def subset(self, index: np.ndarray, steps: int) -> Categories:
        return dataclasses.replace(self, codes=self.codes[index, :steps])

    def recoded(self, lookup: np.ndarray, fill: int) -> np.ndarray:
        """The codes numbered anew: each step's ``lookup[code]``, ``fill`` past the end."""
        return np.where(self.codes >= 0, lookup[np.maximum(self.codes, 0)], fill)


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
      categories: the categorical or token columns, each step's token beside the
        ``inputs`` of the same step (``inputs`` has no feature for them; it may have no
        features at all).
    """

    inputs: np.ndarray | LazyInputs
    lengths: np.ndarray
    labels: np.ndarray | None
    ids: list[str] | list[int]
    feature_names: tuple[str, ...] | None
    source_format: str
    source: str
    categories: tuple[Categories, ...] = ()

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
            categories=tuple(column.subset(index, max_len) for column in self.categories),
        )


# ``ReadOptions.chosen_by`` when a long CSV is read by the feature columns a model has.
MODEL_FEATURES = "the model's feature column"


def time_feature_name(time_col: str, kind: str) -> str:
    """The feature name of a derived time feature: ``time:gap``."""
    return f"{time_col}:{kind}"


def valid_steps(lengths: np.ndarray, steps: int, xp: Any = np) -> np.ndarray:
    """bool[n, steps]: which steps of each padded sequence hold data (the first
    ``lengths[i]``). ``xp`` is the array library: NumPy, or ``jax.numpy`` inside an
    exported graph, where ``steps`` may be symbolic."""
    return xp.arange(steps)[None, :] < lengths[:, None]


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


def preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
