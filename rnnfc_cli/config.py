"""Frozen settings for the model and for training, saved beside the weights.

Stdlib only: ``rnnfc --help`` and the readers import this without jax.
Each field of ``ModelConfig`` maps one-to-one onto a constructor argument of
``models.SequenceClassifier`` so that the model directory alone rebuilds the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

from rnnfc_cli.errors import BadInputError

CELLS = ("lstm", "gru", "rnn")
PRECISIONS = ("float32", "bf16")
POOLS = ("last", "mean", "max", "attention")
BLOCK_POOLINGS = ("mean", "max")
NORMALIZATIONS = ("auto", "feature", "sequence", "sequence+scale", "none")
MONITORS = ("val_accuracy", "val_loss")
CLASS_WEIGHTS = ("none", "balanced")
REFITS = ("auto", "on", "off")
REFIT_BELOW = 200
# ``TrainConfig``'s automatic epochs (0): this many, or as many as ``min_steps`` optimizer
# steps take when that is more. Small sets need many more steps than 200 epochs give them
# (ArrowHead, 32 training sequences, one batch an epoch: test accuracy 0.766 and 0.783 at
# seeds 0 and 1 after 200 steps, 0.857 and 0.851 after 1,000). Smaller batches for small
# sets, as FCN and ResNet take, did no better for the same steps there (0.869, 0.840 with
# 16) and worse on OSULeaf (0.826 against 0.888 at seed 0).
EPOCHS = 200
# AdamW's decoupled weight decay. At 1e-4 (the default until 2026-12-07) it did next to
# nothing, and the recurrent branch overfitted small sets of long shapes. With 0.5, three
# seeds of the nine public sets of benchmarks/accuracy.py on an Intel Xeon: mean 0.924 ->
# 0.926, OSULeaf 0.924 -> 0.934, PickupGestureWiimoteZ 0.800 -> 0.793, the rest equal or
# up; on an AMD EPYC, OSULeaf 0.933 -> 0.945 (0.943 with 2, 0.913 at seed 0 with 0.05),
# ArrowHead 0.844 -> 0.840 (0.832 with 2), order_channels 0.972 -> 0.982 at seed 0.
WEIGHT_DECAY = 0.5
# The conv front end a new model gets unless told otherwise (``ModelConfig.conv``'s own
# default, "", is what models saved before the front end existed have).
DEFAULT_CONV = "64:8,128:5,64:3"
# ``--conv auto`` for a model that reads tokens (``--categorical``, ``--tokens``): one block
# of trigrams. The three wide blocks of numbers overfitted token data (benchmarks/tokens.py
# at seed 0: counting 0.79 against 0.98, an order task 0.87 against 0.998).
TOKEN_CONV = "64:3"


# How a --tokens cell splits into tokens: on whitespace, or into characters.
TOKEN_SPLITS = ("space", "char")
# The token vocabularies' defaults: the most tokens kept per column, and the count a
# token needs in the training data to be kept (--max-vocab, --min-count).
MAX_VOCAB, MIN_COUNT = 20_000, 1


def resolve_conv(spec: str, tokens: bool) -> str:
    """``--conv``'s blocks: ``spec``, or for "auto" the default of numbers or of tokens."""
    if spec != "auto":
        return spec
    return TOKEN_CONV if tokens else DEFAULT_CONV


# Where an exported model may run (``export --platforms``), and where it does by default.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = "cpu,cuda"
# Seconds between snapshots of a run's full train state (``train --checkpoint-every``).
CHECKPOINT_EVERY = 5.0
# Sequences per compiled prediction batch (``predict --batch-size``).
PREDICT_BATCH = 256


def front_end_pools(downsample: int, block_pool: int, blocks: int) -> tuple[int, ...]:
    """The pooling factor after each of ``blocks`` conv blocks: ``block_pool`` after each but
    the last while it divides what is left of ``downsample`` (else 1), and the rest of
    ``downsample`` after the last. Their product is ``downsample``, so the recurrent
    layers run ``ceil(time / downsample)`` steps however it is staged."""
    downsample, block_pool = max(downsample, 1), max(block_pool, 1)  # 0: not yet chosen
    pools, done = [], 1
    for _ in range(blocks - 1):
        step = block_pool if downsample % (done * block_pool) == 0 else 1
        pools.append(step)
        done *= step
    return (*pools, downsample // done)


def parse_conv(spec: str) -> tuple[tuple[int, int], ...]:
    """``"64:8,128:5"`` -> ((64, 8), (128, 5)): (channels, kernel) of each conv block;
    ``""`` or ``"none"`` -> no front end."""
    if spec.strip().lower() in ("", "none"):
        return ()
    blocks = []
    for part in spec.split(","):
        channels, kernel = (int(value) for value in part.split(":"))
        blocks.append((channels, kernel))
    return tuple(blocks)


def conv_blocks(spec: str) -> tuple[tuple[int, int], ...]:
    """``parse_conv`` for settings: a malformed spec is a usage error naming ``--conv``."""
    try:
        return parse_conv(spec)
    except ValueError:
        raise BadInputError(
            f"--conv '{spec}': expected channels:kernel blocks like 64:8,128:5 (or 'none')"
        ) from None


# ``--augment``'s augmentations: name -> (strength when none is given, least, most).
# Strengths: jitter and scale a standard deviation (inputs are scaled to unit variance),
# crop the share of each sequence kept, mixup Beta's alpha.
AUGMENTATIONS = {
    "jitter": (0.03, 0.0, 10.0),
    "scale": (0.1, 0.0, 10.0),
    "crop": (0.9, 0.0, 1.0),
    "mixup": (0.2, 0.0, 100.0),
}


def parse_augment(spec: str) -> tuple[tuple[str, float], ...]:
    """``"crop:0.8,jitter"`` -> (("crop", 0.8), ("jitter", 0.03)), applied in that order;
    ``""`` or ``"none"`` -> (). A malformed spec is a usage error naming ``--augment``."""
    if spec.strip().lower() in ("", "none"):
        return ()
    parts = []
    for part in spec.split(","):
        name, _, text = part.strip().partition(":")
        if name not in AUGMENTATIONS:
            raise BadInputError(
                f"--augment '{part.strip()}': choose among {', '.join(AUGMENTATIONS)} "
                "(each optionally name:strength), or 'none'"
            )
        default, least, most = AUGMENTATIONS[name]
        try:
            strength = float(text) if text else default
        except ValueError:
            raise BadInputError(
                f"--augment '{part.strip()}': the strength is not a number"
            ) from None
        if not least < strength <= most:
            raise BadInputError(
                f"--augment '{part.strip()}': {name}'s strength must be above {least:g} "
                f"and at most {most:g}"
            )
        if name in (chosen for chosen, _ in parts):
            raise BadInputError(f"--augment '{spec}': {name} is named twice")
        parts.append((name, strength))
    return tuple(parts)


def canonical_augment(spec: str) -> str:
    """``--augment`` as a model directory keeps it: every strength written out."""
    return ",".join(f"{name}:{strength:g}" for name, strength in parse_augment(spec))


def parse_platforms(text: str) -> tuple[str, ...]:
    """``--platforms``: "cpu,cuda" -> ("cpu", "cuda"), each known, none twice, at least one."""
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not chosen:
        raise BadInputError(f"--platforms '{text}': name at least one of {', '.join(PLATFORMS)}")
    for platform in chosen:
        if platform not in PLATFORMS:
            raise BadInputError(f"--platforms '{platform}': choose among {', '.join(PLATFORMS)}")
    return chosen


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadInputError(f"{option} '{value}': choose one of {', '.join(choices)}")
    return value


def check_range(option: str, value: float, low: float, high: float, closed: bool = True) -> None:
    """``value`` in [low, high] (``closed``) or [low, high); NaN never is."""
    if not (low <= value <= high if closed else low <= value < high):
        bracket = "]" if closed else ")"
        raise BadInputError(f"{option} {value}: must be in [{low}, {high}{bracket}")


def column_choice(columns: dict[str, list[str]]) -> list[str]:
    """``["--features a,b*", "--ignore note", "derived time:gap"]``: how a training chose
    its CSV columns and what it derived (the ``columns`` of ``rnnfc info --json``), empty
    when it took the columns as they were."""
    parts = [
        f"--{option} {','.join(columns[option])}"
        for option in ("features", "ignore")
        if columns[option]
    ]
    if columns["derived"]:
        parts.append(f"derived {', '.join(columns['derived'])}")
    return parts


def embedding_size(ids: int) -> int:
    """The embedding size of a token column with ``ids`` ids (reserved ones included):
    fast.ai's rule of thumb for categorical embeddings, 1.6 * ids ** 0.56 rounded, capped
    at 64 (the default recurrent state size: larger vectors would outweigh it)."""
    return max(2, min(64, round(1.6 * ids**0.56)))


@dataclasses.dataclass(frozen=True)
class _Serializable:
    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    # Settings whose value in files written before they existed is not today's default.
    WRITTEN_BEFORE: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a saved dict; unknown keys are ignored (``read_model_files`` refuses
        unknown model settings before it gets here)."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = dict(cls.WRITTEN_BEFORE)
        for key, value in data.items():
            if key in names:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Serializable):
    """Architecture of the classifier.

    Attributes:
      num_features: values per time step after preprocessing.
      num_classes: size of the label vocabulary.
      cell: recurrent cell, one of ``CELLS``.
      hidden: recurrent state size (per direction).
      layers: number of stacked recurrent layers.
      bidirectional: add a backward pass over each sequence's valid steps.
      pool: how the per-step states become one vector: one of ``POOLS``, or several
        joined by commas (e.g. "last,mean"), whose results are concatenated.
      dense: sizes of the hidden Dense layers of the head, in order.
      dropout: dropout rate between recurrent layers and in the head.
      layer_norm: layer normalisation after each recurrent layer.
      patch: steps folded into one recurrent step (a Dense projection of each
        non-overlapping patch), so the recurrence runs over ``time / patch`` steps.
      precision: "float32", or "bf16" for bfloat16 inputs to every matrix product
        (float32 parameters, states and accumulation), where hardware multiplies bf16
        fast.
      conv: the convolutional front end before the recurrent layers, as
        "channels:kernel" blocks joined by commas (each a 1-D convolution over time,
        batch normalisation over valid steps and ReLU); "" for none (models saved before
        the front end existed have none).
      downsample: with a front end, the conv features are pooled over runs of this
        many steps before the recurrent layers (which then run ``time / downsample``
        steps), in stages as ``block_pool`` says (the maximum after the last block).
      block_pool: part of ``downsample`` taken between conv blocks: after each block
        but the last, the features are pooled by this factor while it still divides
        what is left of ``downsample``; the rest follows the last block (see
        ``front_end_pools``). Later blocks then see wider windows of the input for less
        work; 1 runs every block at full resolution.
      block_pooling: how features are pooled between blocks: "mean" over the valid
        steps of each window, or "max" (models saved before "mean" existed). Averaging
        keeps short events apart from noise, which a maximum over noisy features does
        not (order_channels_long, seed 0, 60 epochs: 0.953 against 0.773).
      skip: with a front end, the average of the conv features over valid steps is
        joined with the recurrent layers' pooled states before the head.
      branch_dropout: with the skip path, the recurrent layers' pooled states are dropped
        whole, for this share of the training examples, so that the conv features must
        classify on their own and the recurrent branch adds what they miss (on small
        sets of long series the recurrent branch otherwise overfitted: ArrowHead 0.72
        without, 0.85 with 0.5).
      embeddings: (ids, size) of a learned embedding for each of the last
        ``len(embeddings)`` input features, which hold token ids (``--categorical``,
        ``--tokens``): each id becomes a vector of that size, beside the other features.
    """

    WRITTEN_BEFORE: ClassVar[dict[str, Any]] = {"block_pooling": "max"}

    num_features: int
    num_classes: int
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    bidirectional: bool = True
    pool: str = "last,max"
    dense: tuple[int, ...] = (128,)
    dropout: float = 0.1
    layer_norm: bool = False
    patch: int = 1
    precision: str = "float32"
    conv: str = ""
    downsample: int = 1
    block_pool: int = 1
    block_pooling: str = "mean"
    skip: bool = True
    branch_dropout: float = 0.5
    embeddings: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        """The library gets the checks the command line gets; messages name the flag."""
        object.__setattr__(self, "dense", tuple(self.dense))  # hashable, as JSON gives lists
        embeddings = tuple((int(ids), int(size)) for ids, size in self.embeddings)
        object.__setattr__(self, "embeddings", embeddings)
        for _, size in embeddings:
            check_range("--embed-dim", size, 1, 4096)
        if len(embeddings) > self.num_features:
            raise BadInputError("embeddings: more token columns than input features")
        check_choice("--cell", self.cell, CELLS)
        check_range("--hidden", self.hidden, 1, 8192)
        check_range("--layers", self.layers, 0, 16)
        methods = self.pool.split(",")
        for method in methods:
            check_choice("--pool", method, POOLS)
        if len(set(methods)) != len(methods):
            raise BadInputError(f"--pool '{self.pool}': each method at most once")
        if any(size < 1 for size in self.dense):
            sizes = ",".join(map(str, self.dense))
            raise BadInputError(f"--dense '{sizes}': every size must be at least 1")
        check_range("--dropout", self.dropout, 0.0, 1.0, closed=False)
        check_range("--patch", self.patch, 0, 1024)
        check_choice("--precision", self.precision, PRECISIONS)
        blocks = conv_blocks(self.conv)
        for channels, kernel in blocks:
            if not (1 <= channels <= 4096 and 1 <= kernel <= 1024):
                raise BadInputError(
                    f"--conv '{channels}:{kernel}': channels must be 1 to 4096 and the kernel "
                    "1 to 1024 steps"
                )
        check_range("--downsample", self.downsample, 0, 1024)
        check_range("--block-pool", self.block_pool, 0, 1024)
        check_choice("block_pooling", self.block_pooling, BLOCK_POOLINGS)
        check_range("--branch-dropout", self.branch_dropout, 0.0, 1.0, closed=False)
        if not self.layers and not (blocks and self.skip):
            raise BadInputError("--layers 0: needs a conv front end (--conv) and its skip path")


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Serializable):
    """How the classifier is fitted.

    Attributes:
      epochs: maximum number of passes over the training data; 0 (auto): ``EPOCHS``, or
        as many as ``min_steps`` optimizer steps take when that is more (see ``resolved``).
      batch_size: sequences per optimizer step (the last batch is padded and masked).
      lr: peak learning rate of the warm-up + cosine schedule.
      weight_decay: AdamW decoupled weight decay (each step shrinks every parameter by
        ``lr * weight_decay`` of itself, the rate following the schedule).
      warmup_steps: linear warm-up length in optimizer steps.
      clip_norm: gradient clipping by global norm; 0 disables it.
      seed: the one seed every random choice derives from.
      patience: epochs without a better validation score before stopping.
      min_steps: optimizer steps always taken before early stopping may fire, so that
        tiny datasets (one or two batches per epoch) are not stopped near chance. When a
        refit follows, the refit takes them and the validation run before it stops on
        ``patience`` alone (``api._validation_run``).
      val_split: fraction of the training data held out (stratified) when no
        validation file is given.
      label_smoothing: mass moved from the true class to a uniform distribution.
      class_weight: "balanced" weighs each example's loss by n / (classes * n_class).
      monitor: the validation metric that picks the best epoch and drives early stopping.
      length_buckets: batch sequences of similar length together (padding each batch only
        to its bucket's length) when the data is large and varied enough to pay for the
        extra compiled steps; see ``train.length_buckets``.
      devices: local devices to split each batch over (data parallel, parameters
        replicated); 0 chooses (see ``parallel.data_devices``).
      ensemble: models trained at once (vmapped over parameters and PRNG keys, seeds
        ``seed .. seed + ensemble - 1``); predictions average their probabilities.
      refit: "on": when the validation data was held out of the training data, train
        again from scratch on all of it for the number of epochs the validation run
        chose (at least ``min_steps`` steps' worth) and keep the last weights; on small
        sets the held-out examples are too few to choose weights by and too many to
        leave out. "auto": only when fewer than ``REFIT_BELOW`` sequences were held out
        (larger sets choose well and would pay a second training for little); "off".
      augment: the augmentations every training batch gets (``canonical_augment`` form,
        "" for none; see ``augment.py``).
    """

    epochs: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = WEIGHT_DECAY
    warmup_steps: int = 50
    clip_norm: float = 1.0
    seed: int = 0
    patience: int = 20
    min_steps: int = 1000
    val_split: float = 0.1
    label_smoothing: float = 0.0
    class_weight: str = "none"
    monitor: str = "val_accuracy"
    ensemble: int = 1
    length_buckets: bool = True
    devices: int = 0
    refit: str = "auto"
    augment: str = ""

    def __post_init__(self) -> None:
        """The library gets the checks the command line gets; messages name the flag."""
        check_range("--epochs", self.epochs, 0, float("inf"))
        check_range("--batch-size", self.batch_size, 1, 65536)
        if not 0.0 < self.lr < float("inf"):
            raise BadInputError(f"--lr {self.lr}: must be a number greater than 0")
        check_range("--weight-decay", self.weight_decay, 0.0, float("inf"))
        check_range("--warmup", self.warmup_steps, 0, float("inf"))
        check_range("--clip-norm", self.clip_norm, 0.0, float("inf"))
        check_range("--seed", self.seed, 0, float("inf"))
        check_range("--patience", self.patience, 1, float("inf"))
        check_range("--min-steps", self.min_steps, 0, float("inf"))
        if not 0.0 < self.val_split < 1.0:
            raise BadInputError(f"--val-split {self.val_split}: must be between 0 and 1")
        check_range("--label-smoothing", self.label_smoothing, 0.0, 1.0, closed=False)
        check_choice("--class-weight", self.class_weight, CLASS_WEIGHTS)
        check_choice("--monitor", self.monitor, MONITORS)
        check_range("--seeds", self.ensemble, 1, 64)
        check_range("--devices", self.devices, 0, float("inf"))
        check_choice("--refit", self.refit, REFITS)
        parse_augment(self.augment)

    def resolved(self, sequences: int) -> Self:
        """This config with automatic (0) epochs chosen for training on ``sequences``
        sequences."""
        batches = -(-sequences // self.batch_size)
        epochs = self.epochs or max(EPOCHS, -(-self.min_steps // batches))
        return dataclasses.replace(self, epochs=epochs)
