"""What training learns about the data besides the weights, and how to apply it again.

The fitted ``Preprocessing`` (label vocabulary, per-feature scaling, input schema) is saved
in the model directory, so predict on raw input reproduces the training preprocessing.
NumPy only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from rnnfc_cli.errors import BadInputError
from rnnfc_cli.lazy import CHUNK_ROWS, LazyInputs, blocks
from rnnfc_cli.readers import (
    MODEL_FEATURES,
    ReadOptions,
    SequenceData,
    exact_pattern,
    label_kind,
    sorted_vocabulary,
    valid_steps,
)

_MIN_STD = 1e-8
# ``normalize="auto"`` scales per sequence when, for some feature, the 90th percentile of
# the sequences' own standard deviations is more than this many times the 10th: scaled by
# one training-wide std, the quietest tenth would then reach the model at under 1 % of the
# typical amplitude (PLAID's appliance currents span 125,000x: validation accuracy 0.33
# after 97 epochs scaled per feature, 0.83 after 30 per sequence; the other eight public
# sets of benchmarks/accuracy.py span at most 56x, BasicMotions, and keep per-feature).
SEQUENCE_SCALE_SPREAD = 100.0


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The fitted transformation from raw sequences to model inputs and back to labels.

    Attributes:
      labels: the class vocabulary; class index i is ``labels[i]``.
      label_kind: "int" when every label is an integer, else "str".
      feature_mean: per-feature mean over every valid training step.
      feature_std: per-feature standard deviation over every valid training step.
      feature_names: long-CSV feature columns at training, in model order, else None.
      source_format: the format the model was trained from.
      normalize: "feature" scales each feature by the training mean and std; "sequence"
        z-normalises each feature of each sequence by its own mean and std (for series
        whose amplitudes differ by orders of magnitude); "none" leaves values as they are.
        Never "auto": ``fit`` saves what it chose.
      selected: the ``--features`` patterns given at training, and
      ignored: its ``--ignore`` patterns; reapplied to wide CSV at eval and predict (long
        CSV is read by ``feature_names``), see ``read_options``.
      time_features: the features derived from the time column (``ReadOptions``), last in
        ``feature_names``; derived again at eval and predict.
    """

    labels: tuple[str, ...]
    label_kind: str
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    feature_names: tuple[str, ...] | None
    source_format: str
    normalize: str = "feature"
    selected: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    time_features: tuple[str, ...] = ()

    @property
    def derived_features(self) -> tuple[str, ...]:
        """The names of the features derived from the time column (the last ones)."""
        names = self.feature_names or ()
        return names[len(names) - len(self.time_features) :]

    @property
    def num_features(self) -> int:
        return len(self.feature_mean)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        names = data.get("feature_names")
        return cls(
            labels=tuple(str(label) for label in data["labels"]),
            label_kind=data["label_kind"],
            feature_mean=tuple(float(x) for x in data["feature_mean"]),
            feature_std=tuple(float(x) for x in data["feature_std"]),
            feature_names=None if names is None else tuple(names),
            source_format=data["source_format"],
            normalize=data.get("normalize", "feature"),
            selected=tuple(data.get("selected", ())),
            ignored=tuple(data.get("ignored", ())),
            time_features=tuple(data.get("time_features", ())),
        )

    def output_label(self, label: str) -> int | str:
        """A label as the user wrote it: an integer again when all labels are integers."""
        return int(label) if self.label_kind == "int" else label

    @property
    def output_labels(self) -> list[int | str]:
        """Every class as the user wrote it, in class-index order (probabilities' order)."""
        return [self.output_label(label) for label in self.labels]


def fit(
    data: SequenceData, normalize: str = "auto", read: ReadOptions | None = None
) -> Preprocessing:
    """Fit the label vocabulary and the chosen normalisation on training data ("auto":
    see ``choose_normalization``), keeping the column choice ``data`` was ``read`` with."""
    if data.labels is None:
        raise BadInputError(f"{data.source}: training data needs labels")
    labels = sorted_vocabulary(data.labels)
    if len(labels) < 2:
        raise BadInputError(
            f"{data.source}: every sequence has label '{labels[0]}'; "
            "a classifier needs at least two classes"
        )
    if normalize == "auto":
        normalize = choose_normalization(data)
    mean, std = np.zeros(data.num_features), np.ones(data.num_features)
    if normalize == "feature":
        mean, std = feature_moments(data)
        std = np.maximum(std, _MIN_STD)
    return Preprocessing(
        labels=labels,
        label_kind=label_kind(labels),
        feature_mean=tuple(mean.tolist()),
        feature_std=tuple(std.tolist()),
        feature_names=data.feature_names,
        source_format=data.source_format,
        normalize=normalize,
        selected=() if read is None else read.features,
        ignored=() if read is None else read.ignore,
        time_features=() if read is None else read.time_features,
    )


def read_options(prep: Preprocessing, read: ReadOptions) -> ReadOptions:
    """How to read data for the model ``prep`` belongs to: with its time features, and with
    the user's column choice when ``read`` makes one, else with the model's: a long CSV by
    the feature columns it was trained on (columns beyond them are left out, a missing one
    is named), a wide CSV by the training's ``--features`` and ``--ignore``."""
    read = dataclasses.replace(read, time_features=prep.time_features)
    if read.selects_columns:
        return read
    if prep.feature_names is not None:
        columns = prep.feature_names[: len(prep.feature_names) - len(prep.derived_features)]
        features = tuple(exact_pattern(name) for name in columns)
        return dataclasses.replace(read, features=features, chosen_by=MODEL_FEATURES)
    return dataclasses.replace(
        read, features=prep.selected, ignore=prep.ignored, chosen_by="the model's --features"
    )


def choose_normalization(data: SequenceData, rows: int = CHUNK_ROWS) -> str:
    """Scaling per sequence when some feature's per-sequence amplitudes span more than
    ``SEQUENCE_SCALE_SPREAD`` (90th over 10th percentile of the sequences' standard
    deviations, constant sequences left out), else per feature."""
    stds = np.concatenate(
        [
            sequence_moments(block, lengths)[1][:, 0, :]
            for block, lengths in blocks(data.inputs, data.lengths, rows)
        ]
    )
    for feature in stds.T:
        moving = feature[feature > _MIN_STD]
        if len(moving) == 0:
            continue
        low, high = np.percentile(moving, [10, 90])
        if high > SEQUENCE_SCALE_SPREAD * low:
            return "sequence"
    return "feature"


def sequence_moments(
    inputs: np.ndarray, lengths: np.ndarray, xp: Any = np
) -> tuple[np.ndarray, np.ndarray]:
    """Each sequence's own mean and (population) std of each feature over its valid steps,
    [n, 1, features] each; ``xp`` as in ``valid_steps``."""
    valid = valid_steps(lengths, inputs.shape[1], xp)[:, :, None]
    count = lengths[:, None, None]
    mean = xp.where(valid, inputs, 0.0).sum(axis=1, keepdims=True) / count
    centred = xp.where(valid, inputs - mean, 0.0)
    return mean, xp.sqrt((centred**2).sum(axis=1, keepdims=True) / count)


def feature_moments(data: SequenceData, rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each feature over every valid step.

    Computed block by block (merging blocks' means and squared deviations, Chan et al.),
    so data kept on disk is read once and never whole; exact to rounding either way.
    """
    count, mean, squares = 0, np.zeros(data.num_features), np.zeros(data.num_features)
    for block, lengths in blocks(data.inputs, data.lengths, rows):
        steps = block[valid_steps(lengths, block.shape[1])]
        block_mean = steps.mean(axis=0)
        block_squares = ((steps - block_mean) ** 2).sum(axis=0)
        total = count + len(steps)
        delta = block_mean - mean
        mean = mean + delta * len(steps) / total
        squares = squares + block_squares + delta**2 * count * len(steps) / total
        count = total
    return mean, np.sqrt(squares / count)


def conform(prep: Preprocessing, data: SequenceData) -> SequenceData:
    """Check ``data`` against the training schema; reorder named features to model order."""
    if data.feature_names is not None and prep.feature_names is not None:
        missing = [name for name in prep.feature_names if name not in data.feature_names]
        extra = [name for name in data.feature_names if name not in prep.feature_names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing feature columns {missing}")
            if extra:
                parts.append(f"unknown columns {extra}")
            raise BadInputError(
                f"{data.source}: {' and '.join(parts)}; the model was trained on "
                f"{list(prep.feature_names)}"
            )
        order = [data.feature_names.index(name) for name in prep.feature_names]
        inputs = (
            data.inputs.with_features(order)
            if isinstance(data.inputs, LazyInputs)
            else data.inputs[:, :, order]
        )
        return dataclasses.replace(data, inputs=inputs, feature_names=prep.feature_names)
    if data.num_features != prep.num_features:
        expected = f"{prep.num_features}"
        if prep.feature_names is not None:
            expected += f" ({', '.join(prep.feature_names)})"
        raise BadInputError(
            f"{data.source}: has {data.num_features} features per step; the model was "
            f"trained on {expected}: give it data with the same features"
        )
    return data


def transform_inputs(prep: Preprocessing, data: SequenceData) -> np.ndarray | LazyInputs:
    """Scaled inputs, float32[n, time, features], zero at padded steps; for data kept on
    disk, a ``LazyInputs`` that scales each block as it is read."""
    data = conform(prep, data)
    scale = functools.partial(scale_block, prep)
    if isinstance(data.inputs, LazyInputs):
        return data.inputs.with_transform(scale)
    return scale(data.inputs, data.lengths)


def scale_block(
    prep: Preprocessing, inputs: np.ndarray, lengths: np.ndarray, xp: Any = np
) -> np.ndarray:
    """``prep``'s scaling of [n, time, features] sequences with ``lengths``, float32, zero
    at padded steps whatever they held; ``xp`` as in ``valid_steps``."""
    valid = valid_steps(lengths, inputs.shape[1], xp)[:, :, None]
    if prep.normalize == "sequence":
        mean, std = sequence_moments(inputs, lengths, xp)
        scaled = (inputs - mean) / xp.maximum(std, _MIN_STD)
    else:
        scaled = (inputs - xp.asarray(prep.feature_mean)) / xp.asarray(prep.feature_std)
    return xp.where(valid, scaled, 0.0).astype(xp.float32)


def encode_labels(prep: Preprocessing, data: SequenceData) -> np.ndarray:
    """Class indices int32[n]; labels the model never saw are reported, not guessed."""
    if data.labels is None:
        raise BadInputError(f"{data.source}: has no labels")
    index = {label: i for i, label in enumerate(prep.labels)}
    unseen = sorted({label for label in data.labels.tolist() if label not in index})
    if unseen:
        count = int(np.isin(data.labels, unseen).sum())
        shown = ", ".join(repr(label) for label in unseen[:10])
        raise BadInputError(
            f"{data.source}: {count} sequences have labels the model never saw: {shown} "
            f"(model labels: {', '.join(prep.labels)})"
        )
    return np.array([index[label] for label in data.labels.tolist()], dtype=np.int32)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) holding out ``fraction`` of each class.

    The held-out count is allocated to classes by largest remainder, every class keeps
    at least one training example, and at least one example is held out overall.

    Args:
      labels: label per example, [n].
      fraction: share to hold out, in (0, 1).
      seed: makes the choice repeatable.

    Returns:
      Two sorted int arrays partitioning ``range(n)``.
    """
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    target = max(1, round(len(labels) * fraction))
    exact = counts * target / len(labels)
    take = np.minimum(np.floor(exact).astype(int), counts - 1)
    for c in np.argsort(-(exact - take), kind="stable"):
        if take.sum() >= target:
            break
        if take[c] < counts[c] - 1:
            take[c] += 1
    held = [rng.permutation(np.flatnonzero(inverse == c))[: take[c]] for c in range(len(classes))]
    val = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val
