"""Sequences read on demand from an array that may be larger than memory.

A ``.npy`` input is memory-mapped; ``LazyInputs`` wraps it so that subsets (the train and
validation split), scaling and padding happen per batch, as rows are read, never for the
whole file at once. It answers the same indexing the in-memory arrays do
(``inputs[rows, :steps]``, ``inputs[start:stop]``), so training and prediction treat both
alike.
"""

from __future__ import annotations

import dataclasses
import mmap
from collections.abc import Callable, Iterator

import numpy as np

CHUNK_ROWS = 4096

Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class LazyInputs:
    """A view of padded sequences ``raw[rows, :steps]``, computed per access.

    Attributes:
      raw: [N, T, F] (or [N, T] for one feature), any float dtype; often a ``np.memmap``.
      rows: the rows of ``raw`` this view holds, in order.
      lengths: valid steps of each held row; steps past it read as 0.
      steps: the padded length of this view (at most ``T``).
      transform: applied to each read block (float64, zeros on padding) with its lengths;
        it returns what the view yields (e.g. scaled float32),
      transformed: that many features per step (None: as many as it reads).
      features: the columns of ``raw``'s last axis to yield, in order (None: all).
      extra: features yielded after those, held in memory: [len(rows), steps, k], row i
        the view's row i (a model's token ids beside the scaled numbers of its file).
    """

    raw: np.ndarray
    rows: np.ndarray
    lengths: np.ndarray
    steps: int
    transform: Transform | None = None
    transformed: int | None = None
    features: np.ndarray | None = None
    extra: np.ndarray | None = None

    @classmethod
    def of(cls, raw: np.ndarray, lengths: np.ndarray) -> LazyInputs:
        return cls(raw, np.arange(len(raw)), lengths, int(raw.shape[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        features = self.raw.shape[2] if self.raw.ndim == 3 else 1
        if self.features is not None:
            features = len(self.features)
        if self.transformed is not None:
            features = self.transformed
        if self.extra is not None:
            features += self.extra.shape[2]
        return (len(self.rows), self.steps, features)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.transform is not None else np.float64)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index: np.ndarray) -> LazyInputs:
        """The sequences at ``index``, padded to their own longest length."""
        lengths = self.lengths[index]
        steps = int(lengths.max()) if len(lengths) else 1
        extra = None if self.extra is None else self.extra[index, :steps]
        return dataclasses.replace(
            self, rows=self.rows[index], lengths=lengths, steps=steps, extra=extra
        )

    def with_transform(self, transform: Transform, transformed: int | None = None) -> LazyInputs:
        return dataclasses.replace(self, transform=transform, transformed=transformed)

    def with_extra(self, extra: np.ndarray) -> LazyInputs:
        """The same view yielding ``extra`` ([len(rows), steps, k]) after its features."""
        return dataclasses.replace(self, extra=extra)

    def with_features(self, order: list[int]) -> LazyInputs:
        """The same view yielding the features ``order`` of ``raw`` (reordered, or fewer)."""
        return dataclasses.replace(self, features=np.asarray(order))

    def __getitem__(self, key) -> np.ndarray:
        rows_key, time_key = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(time_key, slice) or time_key.start not in (None, 0):
            raise IndexError("LazyInputs reads whole prefixes of the steps: [rows, :steps]")
        steps = min(self.steps, time_key.stop if time_key.stop is not None else self.steps)
        picked = np.arange(len(self.rows))[rows_key]
        return self._read(np.atleast_1d(picked), steps)

    def _read(self, picked: np.ndarray, steps: int) -> np.ndarray:
        if len(picked) == 0:
            return np.zeros((0, steps, self.shape[2]), self.dtype)
        rows = self.rows[picked]
        # Memory maps read fastest in file order; read sorted, then put back in order.
        order = np.argsort(rows, kind="stable")
        _advise(self.raw, contiguous=rows[order[-1]] - rows[order[0]] == len(rows) - 1)
        stored = self.raw.shape[2] if self.raw.ndim == 3 else 1
        block = np.empty((len(rows), steps, stored), np.float64)
        block[order] = np.asarray(self.raw[rows[order], :steps]).reshape(len(rows), steps, -1)
        if self.features is not None:
            block = block[:, :, self.features]
        lengths = self.lengths[picked]
        block[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
        out = block if self.transform is None else self.transform(block, lengths)
        if self.extra is None:
            return out
        return np.concatenate([out, self.extra[picked, :steps].astype(out.dtype)], axis=2)


def _advise(array: np.ndarray, contiguous: bool) -> None:
    """Tell the kernel how a memory-mapped ``array`` is about to be read.

    Reading shuffled rows of a file larger than memory with the default read-ahead fetched
    about 40 times the bytes used (each 3 KB row pulled in a large window, evicted before
    its neighbours were needed); random advice reads only the pages touched. Contiguous
    rows (prediction, statistics) keep the read-ahead.
    """
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, mmap.mmap):
        base.madvise(mmap.MADV_SEQUENTIAL if contiguous else mmap.MADV_RANDOM)


def blocks(
    inputs, lengths: np.ndarray, rows: int = CHUNK_ROWS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``inputs`` in blocks of ``rows`` sequences, each as (float64 values, their lengths):
    for statistics and digests over data that need not fit in memory. Padding reads as
    zero, as every reader and ``LazyInputs`` store it."""
    for start in range(0, len(lengths), rows):
        block = np.asarray(inputs[start : start + rows], dtype=np.float64)
        yield block, lengths[start : start + rows]
