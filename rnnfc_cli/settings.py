"""The settings of a training run, as a user gives them: one owner for their names, their
defaults, their checks and their TOML form.

``RunSettings`` holds every option of ``rnnfc train`` that decides what a run computes,
each named as its flag (``--batch-size`` is ``batch_size``) and in the form the flag takes
("auto", "64:8,128:5", "last,max"). The command line maps its options onto it by name; a
``--config`` file and a model directory's ``config.toml`` are its TOML form; ``--resume``
compares a new command line with the saved one field by field. Where an option goes once
parsed (``ModelConfig``, ``TrainConfig``, ``ReadOptions``) is decided here and nowhere else.

Options about where output goes and how it is shown (``--model-dir``, ``--json``,
``--quiet``, ...) are not settings: they never change the numbers, and are not saved.

Stdlib only, like ``config``: ``rnnfc --help`` imports this without jax.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

from rnnfc_cli.config import (
    MAX_VOCAB,
    MIN_COUNT,
    NORMALIZATIONS,
    TOKEN_SPLITS,
    ModelConfig,
    TrainConfig,
    canonical_augment,
    check_choice,
    conv_blocks,
    resolve_conv,
)
from rnnfc_cli.errors import BadInputError

_TRAIN = TrainConfig()
_MODEL = ModelConfig(num_features=1, num_classes=2)
# Largest value of an option that takes a number or "auto".
MOST_STEPS = 1024
MOST_EPOCHS = 10**6


def parse_auto(option: str, text: str, most: int, what: str = "a number of steps") -> int:
    """``--patch``/``--downsample``/``--block-pool``/``--epochs``: a number from 1 to
    ``most``, or "auto" (0)."""
    text = str(text)
    if text == "auto":
        return 0
    try:
        size = int(text)
    except ValueError:
        raise BadInputError(f"{option} '{text}': expected 'auto' or {what}") from None
    if not 1 <= size <= most:
        raise BadInputError(f"{option} {size}: must be between 1 and {most}")
    return size


def normal_conv(text: str) -> str:
    """``--conv`` in its one spelling ("64:8,128:5", "" for none, "auto" for the default
    the data decides); a malformed spec is a usage error (the ranges are ``ModelConfig``'s
    to check)."""
    if text == "auto":
        return text
    return ",".join(f"{channels}:{kernel}" for channels, kernel in conv_blocks(text))


def normal_pool(text: str) -> str:
    """``--pool`` in its one spelling ("last,max"); the methods are ``ModelConfig``'s to
    check."""
    return ",".join(part.strip() for part in text.split(","))


def parse_dense(text: str) -> tuple[int, ...]:
    """``--dense``: "128,64" -> (128, 64); "none" (or "", "0") -> no hidden Dense layer."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BadInputError(f"--dense '{text}': expected sizes like 128,64 (or 'none')") from None


def column_patterns(option: str, text: str | None) -> tuple[str, ...]:
    """``"a, b*"`` -> ("a", "b*"); an empty pattern is a usage error."""
    if text is None:
        return ()
    patterns = tuple(part.strip() for part in text.split(","))
    if not all(patterns):
        raise BadInputError(
            f"{option} '{text}': expected column names or patterns joined by commas"
        )
    return patterns


def time_features(gap: bool, elapsed: bool) -> tuple[str, ...]:
    """``--time-features`` and ``--elapsed-time`` as the reader's derived features."""
    if elapsed and not gap:
        raise BadInputError("--elapsed-time: add --time-features too")
    return ("gap", "elapsed")[: gap + elapsed]


def read_options(
    label_col: str,
    id_col: str,
    time_col: str,
    labels: str | None,
    features: str | None = None,
    ignore: str | None = None,
    derived: tuple[str, ...] = (),
    **tokens: Any,
):
    """A ``readers.ReadOptions`` from the data options (train's, eval's, predict's);
    ``tokens``: train's ``categorical``, ``tokens`` and ``token_split``."""
    from rnnfc_cli.readers.sequences import ReadOptions

    return ReadOptions(
        label_col=label_col,
        id_col=id_col,
        time_col=time_col,
        labels_file=labels,
        features=column_patterns("--features", features),
        ignore=column_patterns("--ignore", ignore),
        time_features=derived,
        **tokens,
    )


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Every option of ``rnnfc train`` that decides what the run computes, named and
    written as its flag; constructing one checks them all (``BadInputError`` naming the
    flag at fault). Each field's meaning is its flag's ``--help``."""

    # Data
    val: str | None = None
    val_split: float = _TRAIN.val_split
    label_col: str = "label"
    id_col: str = "id"
    time_col: str = "time"
    labels: str | None = None
    features: str | None = None
    ignore: str | None = None
    time_features: bool = False
    elapsed_time: bool = False
    normalize: str = "auto"
    categorical: str | None = None
    tokens: str | None = None
    token_split: str = "space"
    max_vocab: int = MAX_VOCAB
    min_count: int = MIN_COUNT
    embed_dim: str = "auto"
    # Model
    cell: str = _MODEL.cell
    hidden: int = _MODEL.hidden
    layers: int = _MODEL.layers
    bidirectional: bool = _MODEL.bidirectional
    pool: str = _MODEL.pool
    dense: str = ",".join(map(str, _MODEL.dense))
    dropout: float = _MODEL.dropout
    layer_norm: bool = _MODEL.layer_norm
    patch: str = "auto"
    conv: str = "auto"
    downsample: str = "auto"
    block_pool: str = "auto"
    skip: bool = _MODEL.skip
    branch_dropout: float = _MODEL.branch_dropout
    precision: str = _MODEL.precision
    # Training
    epochs: str = "auto"
    batch_size: int = _TRAIN.batch_size
    lr: float = _TRAIN.lr
    weight_decay: float = _TRAIN.weight_decay
    warmup: int = _TRAIN.warmup_steps
    clip_norm: float = _TRAIN.clip_norm
    label_smoothing: float = _TRAIN.label_smoothing
    class_weight: str = _TRAIN.class_weight
    monitor: str = _TRAIN.monitor
    patience: int = _TRAIN.patience
    min_steps: int = _TRAIN.min_steps
    refit: str = _TRAIN.refit
    augment: str = "none"
    seed: int = _TRAIN.seed
    seeds: int = _TRAIN.ensemble
    buckets: bool = _TRAIN.length_buckets
    # Run
    devices: int = _TRAIN.devices

    # Settings a resumed run may change: they do not decide its numbers (devices barely do).
    RESUME_MAY_CHANGE = frozenset({"devices"})

    def __post_init__(self) -> None:
        check_choice("--normalize", self.normalize, NORMALIZATIONS)
        # A guard against typos (--lr 1 for 1e-3 is already far too high); the library
        # takes any positive rate (tests force divergence with one).
        if not 0.0 < self.lr <= 10.0:
            raise BadInputError(f"--lr {self.lr}: must be greater than 0 (and at most 10)")
        column_patterns("--features", self.features)
        column_patterns("--ignore", self.ignore)
        time_features(self.time_features, self.elapsed_time)
        column_patterns("--categorical", self.categorical)
        check_choice("--token-split", self.token_split, TOKEN_SPLITS)
        if self.max_vocab < 1:
            raise BadInputError(f"--max-vocab {self.max_vocab}: must be at least 1")
        if self.min_count < 1:
            raise BadInputError(f"--min-count {self.min_count}: must be at least 1")
        self.vocabulary_options()
        # Build what they become: the model's and the training's own checks run now,
        # before any data is read.
        options = self.model_options()
        for tokens in (False, True):
            conv = resolve_conv(options["conv"], tokens)
            ModelConfig(num_features=1, num_classes=2, **{**options, "conv": conv})
        self.train_config()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str) -> Self:
        """Settings from a TOML table (see ``named``)."""
        return cls(**cls.named(values, source))

    @classmethod
    def named(cls, values: dict[str, Any], source: str) -> dict[str, Any]:
        """A TOML table's values by field name: keys as the flags, with - or _; lists for
        comma-joined values. An unknown key is an error naming ``source``."""
        named = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in cls.names():
                raise BadInputError(f"{source}: unknown setting '{key}'")
            if isinstance(value, list):
                value = ",".join(str(item) for item in value)
            named[name] = value
        return named

    def to_toml(self) -> bytes:
        """The TOML form (``MODEL_DIR/config.toml``, accepted by ``--config``); settings
        left unset (None) are left out."""
        import tomli_w

        values = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return tomli_w.dumps(values).encode()

    def model_options(self) -> dict[str, Any]:
        """``ModelConfig`` fields but the two the data decides; ``patch`` and
        ``downsample`` and ``block_pool`` 0 when chosen from the data ("auto")."""
        return {
            "cell": self.cell,
            "hidden": self.hidden,
            "layers": self.layers,
            "bidirectional": self.bidirectional,
            "pool": normal_pool(self.pool),
            "dense": parse_dense(self.dense),
            "dropout": self.dropout,
            "layer_norm": self.layer_norm,
            "patch": parse_auto("--patch", self.patch, MOST_STEPS),
            "precision": self.precision,
            "conv": normal_conv(self.conv),
            "downsample": parse_auto("--downsample", self.downsample, MOST_STEPS),
            "block_pool": parse_auto("--block-pool", self.block_pool, MOST_STEPS, "a factor"),
            "skip": self.skip,
            "branch_dropout": self.branch_dropout,
        }

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=parse_auto("--epochs", self.epochs, MOST_EPOCHS, "a number of epochs"),
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup,
            clip_norm=self.clip_norm,
            seed=self.seed,
            patience=self.patience,
            min_steps=self.min_steps,
            val_split=self.val_split,
            label_smoothing=self.label_smoothing,
            class_weight=self.class_weight,
            monitor=self.monitor,
            ensemble=self.seeds,
            length_buckets=self.buckets,
            devices=self.devices,
            refit=self.refit,
            augment=canonical_augment(self.augment),
        )

    def read_options(self):
        """How to read DATA and ``--val`` (a ``readers.ReadOptions``)."""
        derived = time_features(self.time_features, self.elapsed_time)
        return read_options(
            self.label_col,
            self.id_col,
            self.time_col,
            self.labels,
            self.features,
            self.ignore,
            derived,
            categorical=column_patterns("--categorical", self.categorical),
            tokens=self.tokens,
            token_split=self.token_split,
        )

    def vocabulary_options(self) -> dict[str, int]:
        """``api.TrainRequest``'s token vocabulary and embedding options."""
        embed_dim = parse_auto("--embed-dim", self.embed_dim, 4096, "an embedding size")
        return {"max_vocab": self.max_vocab, "min_count": self.min_count, "embed_dim": embed_dim}
