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

from rnnfc_cli.config import MAX_VOCAB, MIN_COUNT
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.lazy import CHUNK_ROWS, LazyInputs, blocks
from rnnfc_cli.readers import (
    MODEL_FEATURES,
    Categories,
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
# ``normalize="sequence+scale"``: each sequence's log standard deviation (per feature),
# standardised over the training sequences, clipped to this many of their standard
# deviations (a constant sequence's std is 0: its log would be far out of range).
LOG_SCALE_CLIP = 5.0
# ... and divided by at least this spread of the training sequences' log scales: where
# they hardly differ (series stored already z-normalised), their spread is rounding
# noise, which a smaller divisor would blow up into inputs that float32 and float64
# disagree on. A 10 % difference in scale is then 0.1 standard deviations.
LOG_SCALE_MIN_SPREAD = 1.0


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
        whose amplitudes differ by orders of magnitude); "sequence+scale" does too and
        gives the model what that takes away, each feature's log standard deviation in
        the sequence, as one more input per feature, constant over the sequence (a
        heater's current and a laptop's differ mostly in size); "none" leaves values as
        they are. Never "auto": ``fit`` saves what it chose.
      log_scale_mean: for "sequence+scale", the mean and
      log_scale_std: standard deviation over the training sequences of each feature's
        log standard deviation, which standardise the scale inputs.
      selected: the ``--features`` patterns given at training, and
      ignored: its ``--ignore`` patterns; reapplied to wide CSV at eval and predict (long
        CSV is read by ``feature_names``), see ``read_options``.
      time_features: the features derived from the time column (``ReadOptions``), last in
        ``feature_names``; derived again at eval and predict.
      categorical: the columns read as tokens (``--categorical``, or the one ``--tokens``
        column), each with its
      vocabularies: entry, the tokens kept from the training data, most frequent first
        (ties in text order); token ``vocabulary[i]`` has id ``i + RESERVED_IDS``, id
        ``PAD_ID`` is padding and ``UNKNOWN_ID`` any token not kept.
      tokens: whether ``categorical`` is one ``--tokens`` column (one sequence per cell),
        split as ``token_split`` says.
      label_col, id_col, time_col: the CSV columns the training read as the label, the
        sequence id and the time; eval and predict read them again unless told others.
    """

    labels: tuple[str, ...]
    label_kind: str
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    feature_names: tuple[str, ...] | None
    source_format: str
    normalize: str = "feature"
    log_scale_mean: tuple[float, ...] = ()
    log_scale_std: tuple[float, ...] = ()
    selected: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    time_features: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    vocabularies: tuple[tuple[str, ...], ...] = ()
    tokens: bool = False
    token_split: str = "space"
    label_col: str = "label"
    id_col: str = "id"
    time_col: str = "time"

    @property
    def model_features(self) -> int:
        """What the model reads per step: the scaled numeric features, their scales (for
        "sequence+scale"), then one token id (as a float) per categorical column."""
        return self.num_features + len(self.log_scale_mean) + len(self.categorical)

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
            log_scale_mean=tuple(float(x) for x in data.get("log_scale_mean", ())),
            log_scale_std=tuple(float(x) for x in data.get("log_scale_std", ())),
            selected=tuple(data.get("selected", ())),
            ignored=tuple(data.get("ignored", ())),
            time_features=tuple(data.get("time_features", ())),
            categorical=tuple(data.get("categorical", ())),
            vocabularies=tuple(tuple(str(t) for t in v) for v in data.get("vocabularies", ())),
            tokens=bool(data.get("tokens", False)),
            token_split=data.get("token_split", "space"),
            label_col=data.get("label_col", "label"),
            id_col=data.get("id_col", "id"),
            time_col=data.get("time_col", "time"),
        )

    def output_label(self, label: str) -> int | str:
        """A label as the user wrote it: an integer again when all labels are integers."""
        return int(label) if self.label_kind == "int" else label

    @property
    def output_labels(self) -> list[int | str]:
        """Every class as the user wrote it, in class-index order (probabilities' order)."""
        return [self.output_label(label) for label in self.labels]


# Token ids: padding, then tokens the vocabulary does not hold, then the vocabulary's.
PAD_ID, UNKNOWN_ID, RESERVED_IDS = 0, 1, 2


def build_vocabulary(
    column: Categories, lengths: np.ndarray, max_vocab: int, min_count: int
) -> tuple[str, ...]:
    """The tokens of one column over the valid steps of the training data, most frequent
    first (ties in text order), those seen fewer than ``min_count`` times left out, at most
    ``max_vocab``."""
    codes = column.codes[valid_steps(lengths, column.codes.shape[1])]
    counts = np.bincount(codes, minlength=len(column.texts))
    order = np.lexsort([column.texts, -counts])
    kept = [i for i in order[:max_vocab] if counts[i] >= min_count]
    return tuple(column.texts[kept].tolist())


def fit(
    data: SequenceData,
    normalize: str = "auto",
    read: ReadOptions | None = None,
    max_vocab: int = MAX_VOCAB,
    min_count: int = MIN_COUNT,
) -> Preprocessing:
    """Fit the label vocabulary, the token vocabularies and the chosen normalisation on
    training data ("auto": see ``normalization_for``), keeping the column choice
    ``data`` was ``read`` with."""
    if data.labels is None:
        raise BadInputError(f"{data.source}: training data needs labels")
    labels = sorted_vocabulary(data.labels)
    if len(labels) < 2:
        raise BadInputError(
            f"{data.source}: every sequence has label '{labels[0]}'; "
            "a classifier needs at least two classes"
        )
    stds = sequence_stds(data) if normalize in ("auto", "sequence+scale") else None
    if normalize == "auto":
        normalize = normalization_for(stds)
    mean, std = np.zeros(data.num_features), np.ones(data.num_features)
    if normalize == "feature":
        mean, std = feature_moments(data)
        std = np.maximum(std, _MIN_STD)
    log_scales = log_scale_moments(stds) if normalize == "sequence+scale" else ((), ())
    return Preprocessing(
        labels=labels,
        label_kind=label_kind(labels),
        feature_mean=tuple(mean.tolist()),
        feature_std=tuple(std.tolist()),
        feature_names=data.feature_names,
        source_format=data.source_format,
        normalize=normalize,
        log_scale_mean=tuple(log_scales[0]),
        log_scale_std=tuple(log_scales[1]),
        selected=() if read is None else read.features,
        ignored=() if read is None else read.ignore,
        time_features=() if read is None else read.time_features,
        categorical=tuple(column.name for column in data.categories),
        vocabularies=tuple(
            build_vocabulary(column, data.lengths, max_vocab, min_count)
            for column in data.categories
        ),
        tokens=read is not None and read.tokens is not None,
        token_split="space" if read is None else read.token_split,
        **(
            {}
            if read is None
            else {"label_col": read.label_col, "id_col": read.id_col, "time_col": read.time_col}
        ),
    )


def read_options(prep: Preprocessing, read: ReadOptions) -> ReadOptions:
    """How to read data for the model ``prep`` belongs to: by the label, id and time
    columns of its training where ``read`` leaves them None, with its time features and
    token columns, and with
    the user's column choice when ``read`` makes one, else with the model's: a long CSV by
    the feature columns it was trained on (columns beyond them are left out, a missing one
    is named), a wide CSV by the training's ``--features`` and ``--ignore``."""
    from_csv = prep.source_format in ("long-csv", "token-csv")  # NPZ tokens need no flag
    read = dataclasses.replace(
        read,
        label_col=prep.label_col if read.label_col is None else read.label_col,
        id_col=prep.id_col if read.id_col is None else read.id_col,
        time_col=prep.time_col if read.time_col is None else read.time_col,
        time_features=prep.time_features,
        categorical=prep.categorical if from_csv and not prep.tokens else (),
        tokens=prep.categorical[0] if prep.tokens else None,
        token_split=prep.token_split,
    )
    if read.selects_columns:
        return read
    if prep.feature_names is not None:
        columns = prep.feature_names[: len(prep.feature_names) - len(prep.derived_features)]
        features = tuple(exact_pattern(name) for name in columns)
        return dataclasses.replace(read, features=features, chosen_by=MODEL_FEATURES)
    return dataclasses.replace(
        read, features=prep.selected, ignore=prep.ignored, chosen_by="the model's --features"
    )


def sequence_stds(data: SequenceData, rows: int = CHUNK_ROWS) -> np.ndarray:
    """Each training sequence's own standard deviation of each feature, [n, features],
    read block by block."""
    return np.concatenate(
        [
            sequence_moments(block, lengths)[1][:, 0, :]
            for block, lengths in blocks(data.inputs, data.lengths, rows)
        ]
    )


def normalization_for(stds: np.ndarray) -> str:
    """Scaling per sequence, keeping each sequence's scale as an input ("sequence+scale"),
    when some feature's per-sequence amplitudes (``stds``, [sequences, features]) span
    more than ``SEQUENCE_SCALE_SPREAD`` (90th over 10th percentile, constant sequences
    left out), else per feature.

    Measured on PLAID (appliance currents spanning 125,000x), three seeds: 0.865 test
    accuracy z-normalised per sequence (seeds 0, 1), 0.890 with the scale kept as an
    input (with ``--block-pool auto``)."""
    for feature in stds.T:
        moving = feature[feature > _MIN_STD]
        if len(moving) == 0:
            continue
        low, high = np.percentile(moving, [10, 90])
        if high > SEQUENCE_SCALE_SPREAD * low:
            return "sequence+scale"
    return "feature"


def log_scale_moments(stds: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and spread over the training sequences of each feature's log standard
    deviation (``stds``: [sequences, features]), constant sequences left out; the spread
    at least ``LOG_SCALE_MIN_SPREAD``."""
    means, spreads = [], []
    for feature in stds.T:
        logs = np.log(feature[feature > _MIN_STD])
        means.append(float(logs.mean()) if len(logs) else 0.0)
        spreads.append(max(float(logs.std()) if len(logs) else 0.0, LOG_SCALE_MIN_SPREAD))
    return means, spreads


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
    columns = tuple(column.name for column in data.categories)
    if columns != prep.categorical:
        raise BadInputError(
            f"{data.source}: the model reads tokens from {list(prep.categorical) or 'no column'}"
            f", this data holds them in {list(columns) or 'none'}"
        )
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
    """Scaled inputs, float32[n, time, features], zero at padded steps, then one token id
    per categorical column; for data kept on disk, a ``LazyInputs`` that scales each
    block as it is read."""
    data = conform(prep, data)
    scale = functools.partial(scale_block, prep)
    if isinstance(data.inputs, LazyInputs):
        lazy = data.inputs.with_transform(scale, prep.num_features + len(prep.log_scale_mean))
        if prep.categorical:  # ids in memory (int32 per step), scaled numbers per block
            lazy = lazy.with_extra(token_ids(prep, data).astype(np.float32))
        return lazy
    scaled = scale(data.inputs, data.lengths)
    if not prep.categorical:
        return scaled
    ids = token_ids(prep, data).astype(np.float32)  # exact: ids < 2**24
    return np.concatenate([scaled, ids], axis=2)


def token_ids(prep: Preprocessing, data: SequenceData) -> np.ndarray:
    """int32[n, time, categorical columns]: each step's token id in the model's
    vocabulary (``UNKNOWN_ID`` for a token it does not hold, ``PAD_ID`` past the end)."""
    columns = []
    for column, vocabulary in zip(data.categories, prep.vocabularies, strict=True):
        index = {token: i + RESERVED_IDS for i, token in enumerate(vocabulary)}
        lookup = np.array([index.get(t, UNKNOWN_ID) for t in column.texts.tolist()], np.int32)
        columns.append(column.recoded(lookup, PAD_ID))
    return np.stack(columns, axis=2).astype(np.int32)


def unknown_token_rate(prep: Preprocessing, data: SequenceData) -> float | None:
    """The share of the tokens at valid steps (all categorical columns together) that the
    model's vocabularies do not hold; None for a model without tokens."""
    if not prep.categorical:
        return None
    ids = token_ids(prep, conform(prep, data))
    valid = valid_steps(data.lengths, ids.shape[1])
    return float((ids[valid] == UNKNOWN_ID).mean())


def scale_block(
    prep: Preprocessing, inputs: np.ndarray, lengths: np.ndarray, xp: Any = np
) -> np.ndarray:
    """``prep``'s scaling of [n, time, features] sequences with ``lengths``, float32, zero
    at padded steps whatever they held; ``xp`` as in ``valid_steps``."""
    valid = valid_steps(lengths, inputs.shape[1], xp)[:, :, None]
    if prep.normalize in ("sequence", "sequence+scale"):
        mean, std = sequence_moments(inputs, lengths, xp)
        scaled = (inputs - mean) / xp.maximum(std, _MIN_STD)
        if prep.log_scale_mean:
            level = xp.log(xp.maximum(std, _MIN_STD)) - xp.asarray(prep.log_scale_mean)
            level = xp.clip(level / xp.asarray(prep.log_scale_std), -LOG_SCALE_CLIP, LOG_SCALE_CLIP)
            scaled = xp.concatenate([scaled, xp.broadcast_to(level, scaled.shape)], axis=2)
    else:
        scaled = (inputs - xp.asarray(prep.feature_mean)) / xp.asarray(prep.feature_std)
    return xp.where(valid, scaled, 0.0).astype(xp.float32)


def per_feature(prep: Preprocessing, values: np.ndarray) -> np.ndarray:
    """Values per model input, [..., model_features], as values per feature and token
    column: each scale input's (``"sequence+scale"``) added to its feature's, so that
    attributions name the user's features and still add up."""
    if not prep.log_scale_mean:
        return values
    numeric = prep.num_features
    scales = values[..., numeric : 2 * numeric]
    return np.concatenate([values[..., :numeric] + scales, values[..., 2 * numeric :]], axis=-1)


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
