"""The library's entry points: train, evaluate, predict and describe a model directory.

Each takes plain values and returns plain values, so it can be used and tested without
the command line; the CLI only parses options and renders what these return.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnfc_cli import __version__, checkpoint, preprocessing, readers
from rnnfc_cli.callbacks import Callback, CallbackList, ProgressOnly
from rnnfc_cli.config import (
    CHECKPOINT_EVERY,
    DEFAULT_PLATFORMS,
    MAX_VOCAB,
    MIN_COUNT,
    NORMALIZATIONS,
    PREDICT_BATCH,
    REFIT_BELOW,
    ModelConfig,
    TrainConfig,
    check_choice,
    embedding_size,
    parse_conv,
    parse_platforms,
    resolve_conv,
)
from rnnfc_cli.errors import BadInputError, ModelDirError, RnnfcError
from rnnfc_cli.lazy import blocks
from rnnfc_cli.metrics import Report, classification_report
from rnnfc_cli.settings import RunSettings

if TYPE_CHECKING:
    from rnnfc_cli.train import EpochRecord, TrainSnapshot

_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """Everything ``rnnfc train`` was asked to do.

    Attributes:
      data: training file path, or "-" for CSV on stdin.
      model_dir: where the model directory goes.
      model_options: ``ModelConfig`` fields other than the two the data decides;
        ``patch=0`` (the default) picks the patch size from the training lengths.
      train: training settings.
      read: how to read the input files.
      val: a validation file; when None, ``train.val_split`` of the data is held out.
      force: replace an existing model directory.
      normalize: "auto", "feature", "sequence", "sequence+scale" or "none" (see
        ``preprocessing.Preprocessing``).
      extra_files: more files for the model directory (name -> content), written with
        the rest before it is moved into place.
      resume: continue the interrupted run of ``model_dir`` (same data and settings).
      checkpoint_every: seconds between snapshots of the train state (0: every epoch).
      stop: set it (e.g. from a signal handler) to snapshot and stop; ``train_model``
        then raises ``TrainingInterruptedError``.
      max_vocab, min_count: the token vocabularies' cap and the count a token needs to be
        kept (``preprocessing.build_vocabulary``).
      embed_dim: every token column's embedding size; 0 chooses it from the vocabulary
        size (``config.embedding_size``).
    """

    data: str
    model_dir: Path
    model_options: dict[str, Any]
    train: TrainConfig
    read: readers.ReadOptions = dataclasses.field(default_factory=readers.ReadOptions)
    val: str | None = None
    force: bool = False
    normalize: str = "auto"
    extra_files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    resume: bool = False
    checkpoint_every: float = CHECKPOINT_EVERY
    stop: threading.Event | None = None
    max_vocab: int = MAX_VOCAB
    min_count: int = MIN_COUNT
    embed_dim: int = 0

    def __post_init__(self) -> None:
        check_choice("--normalize", self.normalize, NORMALIZATIONS)

    @classmethod
    def from_settings(cls, settings: RunSettings, **where: Any) -> TrainRequest:
        """The request for a run's settings (as ``rnnfc train`` takes them), which go to
        the model directory's ``config.toml`` too; ``where`` gives the other fields
        (data, model_dir, force, resume, ...)."""
        return cls(
            model_options=settings.model_options(),
            train=settings.train_config(),
            read=settings.read_options(),
            val=settings.val,
            normalize=settings.normalize,
            extra_files={"config.toml": settings.to_toml()},
            **settings.vocabulary_options(),
            **where,
        )


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Predicted labels (as the user wrote them) and probabilities, in input order."""

    ids: list[Any]
    labels: list[Any]
    proba: np.ndarray
    classes: list[Any]


class _Recorder(Callback):
    """Writes each epoch's metrics and each snapshot to the model directory."""

    def __init__(self, writer: checkpoint.ModelDirWriter):
        self.writer = writer

    def on_epoch(self, record: EpochRecord, params: Any) -> None:
        del params
        self.writer.append_metrics(record.to_dict())

    def on_snapshot(self, snapshot: TrainSnapshot) -> None:
        self.writer.save_snapshot(snapshot.step, snapshot.arrays(), snapshot.progress())

    def resume(self, template: Any) -> TrainSnapshot | None:
        """The interrupted run's snapshot; the metrics log is cut back to match it."""
        from rnnfc_cli.train import TrainSnapshot

        saved = self.writer.load_snapshot()
        if saved is None:
            return None
        snapshot = TrainSnapshot.restore(template, *saved)
        self.writer.rewrite_metrics([record.to_dict() for record in snapshot.history])
        return snapshot


class _PhaseClock:
    """Wall seconds of the phases of a training run, each ``lap`` ending one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds = {**self.seconds, phase: round(now - self._last, 3)}
        self._last = now


def train_model(request: TrainRequest, callbacks: Callback | None = None) -> dict[str, Any]:
    """Read, preprocess, fit with early stopping and save a model directory.

    Returns:
      The training summary (also saved as ``summary.json``); its ``seconds`` say where the
      wall time went, phase by phase.
    """
    clock = _PhaseClock()
    full = readers.read_sequences(request.data, request.read)
    if request.val is not None:
        train_data, val_data = full, readers.read_sequences(request.val, request.read)
    else:
        train_index, val_index = preprocessing.stratified_split(
            _labels_of(full), request.train.val_split, request.train.seed
        )
        if len(train_index) == 0 or len(val_index) == 0:
            raise BadInputError(
                f"{full.source}: {len(full)} sequences are too few to hold out a validation "
                "set; add data or give --val FILE"
            )
        train_data, val_data = full.subset(train_index), full.subset(val_index)
    clock.lap("read")
    # Saved, keyed and refitted with the epochs chosen for this data.
    request = dataclasses.replace(request, train=request.train.resolved(len(train_data)))
    refitting = _refits(request, held_out=len(val_data))
    prep = preprocessing.fit(
        train_data, request.normalize, request.read, request.max_vocab, request.min_count
    )
    if prep.categorical and "mixup" in request.train.augment:
        raise BadInputError(
            "--augment mixup: not with --categorical or --tokens columns (a mix of two ids "
            "is no id)"
        )
    options = dict(request.model_options)
    options["conv"] = resolve_conv(options.get("conv", ""), tokens=bool(prep.categorical))
    if not options.get("downsample"):
        options["downsample"] = auto_downsample(train_data.lengths) if options.get("conv") else 1
    if not options.get("block_pool"):
        stacked = len(parse_conv(options["conv"])) > 1  # else nothing to pool between
        options["block_pool"] = auto_block_pool(train_data.lengths) if stacked else 1
    if not options.get("patch"):
        # With a front end, the convolutions see every step and downsampling shortens the
        # recurrence; without one, patches do both.
        options["patch"] = 1 if options.get("conv") else auto_patch(train_data.lengths)
    options["embeddings"] = tuple(
        (ids, request.embed_dim or embedding_size(ids))
        for ids in (len(v) + preprocessing.RESERVED_IDS for v in prep.vocabularies)
    )
    model_config = ModelConfig(
        num_features=prep.model_features, num_classes=len(prep.labels), **options
    )
    from rnnfc_cli import models, runtime, train

    runtime.configure_jax()
    import jax

    model = models.build_model(model_config)
    warmed = train.start_warm_up(model, request.train)
    train_arrays = _arrays(prep, train_data)
    val_arrays = _arrays(prep, val_data)
    warmed()
    clock.lap("preprocess")
    if jax.process_count() > 1 and request.resume:
        raise BadInputError("--resume: not supported in a multi-process run yet")
    run_key = _run_key(model_config, request.train, train.STATE_LAYOUT, train_arrays, val_arrays)
    writer = _open_writer(request, run_key)
    with writer:
        writer.write_settings(model_config, request.train, prep)
        for name, content in request.extra_files.items():
            writer.write_file(name, content)
        recorder = _Recorder(writer)
        clock.lap("start")
        result = train.fit(
            model,
            _validation_run(request.train, refitting),
            train_arrays,
            val_arrays,
            CallbackList(recorder, callbacks or Callback()),  # saved first, then shown
            resume=recorder.resume if writer.resumed else None,
            checkpoint_every=request.checkpoint_every,
            stop=request.stop,
        )
        clock.lap("train")
        refit_epochs = _refit_epochs(request.train, result, len(full)) if refitting else 0
        if refit_epochs:
            # A refit interrupted or killed resumes from the validation run's last snapshot
            # and is done again (it is deterministic), so it needs no snapshots of its own.
            refit = train.fit(
                model,
                dataclasses.replace(
                    request.train, epochs=refit_epochs, patience=refit_epochs, min_steps=0
                ),
                _arrays(prep, full),
                val_arrays,
                ProgressOnly(callbacks or Callback()),
                checkpoint_every=0.0,
                stop=request.stop,
                keep_last=True,
            )
            result = dataclasses.replace(
                result,
                params=refit.params,
                train_seconds=result.train_seconds + refit.train_seconds,
                steps=result.steps + refit.steps,
            )
            clock.lap("refit")
        summary = {
            "model_dir": str(request.model_dir),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "best_val_loss": result.best_val_loss,
            "train_seconds": round(result.train_seconds, 3),
            "steps": result.steps,
            "params": int(sum(np.size(p) for p in jax.tree.leaves(result.params))),
            "ensemble": request.train.ensemble,
            "best_epochs": list(result.best_epochs),
            "member_val_accuracy": list(result.member_val_accuracy),
            "member_val_accuracy_mean": float(np.mean(result.member_val_accuracy)),
            "member_val_accuracy_std": float(np.std(result.member_val_accuracy)),
            "patch": model_config.patch,
            "refit_epochs": refit_epochs or None,
            "diverged_at": None
            if result.diverged_at is None
            else {"epoch": result.diverged_at[0], "step": result.diverged_at[1]},
            "devices": result.devices,
            "processes": jax.process_count(),
            "resumed_from_epoch": result.resumed_from_epoch,
            "backend": jax.default_backend(),
            "train_data": _data_summary(train_data),
            "val_data": _data_summary(val_data),
            "versions": _versions(),
            "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "model_id": uuid.uuid4().hex,
            "seconds": clock.seconds,
        }
        classes = prep.output_labels
        validation = classification_report(val_arrays.labels, result.val_proba)
        writer.write_file(
            checkpoint.VALIDATION_FILE, json.dumps(validation.to_dict(classes), indent=2).encode()
        )
        writer.commit(summary, result.params, result.best_epoch)
    clock.lap("save")  # after summary.json was written: in the returned summary only
    return {**summary, "seconds": clock.seconds}


def _open_writer(request: TrainRequest, run_key: str):
    """The model directory's writer; in a multi-process run, process 0's, and the others
    learn whether it could be opened (else they would wait for it in the first step)."""
    import jax

    def open_it():
        return checkpoint.ModelDirWriter(
            request.model_dir, force=request.force, resume=request.resume, run_key=run_key
        )

    if jax.process_count() == 1:
        return open_it()
    from jax.experimental import multihost_utils

    writer, failure = checkpoint.NullWriter(), None
    if jax.process_index() == 0:
        try:
            writer = open_it()
        except RnnfcError as err:
            failure = err
    opened = multihost_utils.broadcast_one_to_all(np.int32(failure is None))
    if failure is not None:
        raise failure
    if not opened:
        raise ModelDirError(
            f"{request.model_dir}: process 0 could not open the model directory (see its error)"
        )
    return writer


def _run_key(model: ModelConfig, config: TrainConfig, layout: int, *arrays: Any) -> str:
    """A digest of what decides a run's numbers and the form of its snapshots: settings
    (bar the device count), the train state's layout and the data."""
    digest = hashlib.blake2b(digest_size=16)
    settings = {"model": model.to_dict(), "train": {**config.to_dict(), "devices": None}}
    settings["state_layout"] = layout
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for array_set in arrays:
        for block, _ in blocks(array_set.inputs, array_set.lengths):
            digest.update(np.ascontiguousarray(block).data)
        for array in (array_set.lengths, array_set.labels):
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


PATCH_TARGET_STEPS = 32
MAX_AUTO_PATCH = 16


def auto_patch(lengths: np.ndarray) -> int:
    """Patch size for ``--patch auto``: the smallest power of two that brings the median
    training length down to at most ``PATCH_TARGET_STEPS`` recurrent steps (capped at 16).
    """
    return _fold_to(lengths, PATCH_TARGET_STEPS, MAX_AUTO_PATCH)


def _fold_to(lengths: np.ndarray, target: int, cap: int) -> int:
    """The smallest power of two (at most ``cap``) that divides the median length down to
    at most ``target`` steps."""
    median = float(np.median(lengths))
    size = 1
    while median / size > target and size < cap:
        size *= 2
    return size


# Fewer recurrent steps overfit less where the conv features already carry the shapes
# (OSULeaf at seeds 0/1: 0.921/0.860 over 54 steps, 0.934/0.921 over 27) and still
# resolve the order tasks' events (0.965 and 1.000 over 50, 0.972 and 1.000 over 25).
DOWNSAMPLE_TARGET_STEPS = 32
# ... up to 64 (1,500 steps in 24): at 16, 94 recurrent steps were too many for the order of
# three spikes 150 steps apart (benchmarks' order_channels_long, seed 0: 0.370, at 64 0.842);
# ACSF1 (1,460 steps) gave 0.920 either way at seed 0.
MAX_AUTO_DOWNSAMPLE = 64


def auto_downsample(lengths: np.ndarray) -> int:
    """Pooling for ``--downsample auto``: the smallest power of two that brings the
    median training length down to at most ``DOWNSAMPLE_TARGET_STEPS`` recurrent steps
    (capped at ``MAX_AUTO_DOWNSAMPLE``). Pooling conv features keeps an event a few steps
    wide (the first convolution saw it at full resolution), unlike folding raw steps into
    patches."""
    return _fold_to(lengths, DOWNSAMPLE_TARGET_STEPS, MAX_AUTO_DOWNSAMPLE)


# ``--block-pool auto`` pools between the conv blocks only for data with sequences longer
# than this: there the front end at full resolution is what makes training slow (PLAID,
# up to 1,344 steps: 0.19 s a step; 0.10 s pooled between blocks), and pooling helped
# ACSF1 (1,460 steps) 0.877 -> 0.923 over three seeds in half the time. Averaged between
# the blocks it keeps order data too (order_channels_long, 1,500 steps: 0.972 in 177 s;
# 0.775 with the maximum; 0.988/0.983 at full resolution in 604/516 s). Up to it, the
# blocks keep full resolution: on the order tasks (300-500 steps) max-pooling between them
# stopped training early on a worse model (order_pulses 0.999 -> 0.88-0.96,
# order_channels 0.978 -> 0.47-0.64), and averaging did too (seed 0: order_channels
# 0.972 -> 0.790, order_pulses 1.000 -> 0.993, OSULeaf 0.934 -> 0.921, in about half the
# time; PickupGestureWiimoteZ 0.720 -> 0.800). Averaging by 4 between the blocks (seed 0)
# helped the long shapes (ACSF1 0.940 in 61 s, PLAID 0.899 in 154 s) and lost the order
# (order_channels_long 0.597): 2 it is.
LONG_SERIES_STEPS = 1024


def auto_block_pool(lengths: np.ndarray) -> int:
    """``--block-pool auto``: 2 when some training sequence is longer than
    ``LONG_SERIES_STEPS``, else 1."""
    return 2 if int(np.max(lengths)) > LONG_SERIES_STEPS else 1


def _refits(request: TrainRequest, held_out: int) -> bool:
    """Whether a refit on all the training data follows the validation run (see
    ``TrainConfig.refit``); a diverged validation run still cancels it."""
    config = request.train
    if request.val is not None or config.refit == "off":
        return False
    return config.refit == "on" or held_out < REFIT_BELOW


def _validation_run(config: TrainConfig, refitting: bool) -> TrainConfig:
    """The validation run's settings. Before a refit it only chooses the number of epochs,
    and the refit takes at least ``min_steps`` steps whatever it chooses, so it stops on
    patience alone: in the accuracy benchmark's runs it had gone on to the floor long after
    its best epoch (ArrowHead: best at epoch 214 of 1,000 one-batch epochs, ACSF1 40 of
    334), and the refit it chose was the floor's length in 9 of 11 sets all the same."""
    return dataclasses.replace(config, min_steps=0) if refitting else config


def _refit_epochs(config: TrainConfig, result: Any, sequences: int) -> int:
    """Epochs of the refit on all ``sequences`` training sequences (0 after a diverged
    validation run): those the validation run chose, at least ``min_steps`` steps' worth,
    at most ``epochs``."""
    if result.diverged_at is not None:
        return 0
    steps_per_epoch = -(-sequences // config.batch_size)
    for_min_steps = -(-config.min_steps // steps_per_epoch)
    return min(config.epochs, max(max(result.best_epochs), for_min_steps))


def _labels_of(sequences: readers.SequenceData) -> np.ndarray:
    if sequences.labels is None:
        raise BadInputError(f"{sequences.source}: training data needs labels")
    return sequences.labels


def _arrays(prep: preprocessing.Preprocessing, sequences: readers.SequenceData):
    from rnnfc_cli.train import ArraySet

    return ArraySet(
        inputs=preprocessing.transform_inputs(prep, sequences),
        lengths=sequences.lengths.astype(np.int32),
        labels=preprocessing.encode_labels(prep, sequences),
        scale_inputs=len(prep.log_scale_mean),
    )


def _data_summary(sequences: readers.SequenceData) -> dict[str, Any]:
    labels, counts = np.unique(_labels_of(sequences), return_counts=True)
    return {
        "source": sequences.source,
        "format": sequences.source_format,
        "sequences": len(sequences),
        "features": sequences.num_features,
        "length_min": int(sequences.lengths.min()),
        "length_median": float(np.median(sequences.lengths)),
        "length_max": int(sequences.lengths.max()),
        "class_counts": dict(zip(labels.tolist(), counts.tolist(), strict=True)),
    }


def _versions() -> dict[str, str]:
    versions = {"rnnfc": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def load_model(model_dir: Path) -> tuple[checkpoint.ModelFiles, Any, Any]:
    """One version of a saved model (see ``checkpoint.read_model``), in memory: its files,
    its Flax model and its stacked parameters."""
    from rnnfc_cli import inference, models, runtime

    runtime.configure_jax()

    def load_params(files: checkpoint.ModelFiles):
        return checkpoint.restore_params(
            files.path,
            lambda: inference.abstract_params(
                models.build_model(files.model), files.train.ensemble
            ),
        )

    files, params = checkpoint.read_model(model_dir, load_params)
    return files, models.build_model(files.model), params


def _open_model(model_dir: Path):
    """``load_model``, with ``proba(inputs, lengths, batch_size)`` and ``attribute(inputs,
    lengths, targets)`` (``attribution.attributions`` of the same parameters)."""
    from rnnfc_cli import inference

    files, model, params = load_model(model_dir)
    proba_fn = inference.make_proba_fn(model)

    def proba(inputs, lengths: np.ndarray, batch_size: int, on_batch=None) -> np.ndarray:
        lengths = lengths.astype(np.int32)
        return inference.predict_proba(
            proba_fn, params, inputs, lengths, batch_size, on_batch=on_batch
        )

    def attribute(inputs, lengths: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
        from rnnfc_cli import attribution

        found = attribution.attributions(model, params, inputs, lengths, targets)
        return [preprocessing.per_feature(files.preprocessing, a) for a in found]

    return files, proba, attribute


# Told (sequences done, sequences in all) as prediction goes, for a progress display.
Progress = Callable[[int, int], None]


def _counter(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    """``on_batch`` for ``inference.predict_proba`` that adds up the rows for ``progress``."""
    if progress is None:
        return None
    done = 0

    def on_batch(rows: int) -> None:
        nonlocal done
        done += rows
        progress(done, total)

    return on_batch


# How eval, predict and report read by default: by the label, id and time columns the
# model was trained with (``preprocessing.read_options``).
MODEL_COLUMNS = readers.ReadOptions(label_col=None, id_col=None, time_col=None)

# Predict works through its input in chunks of about this many bytes of padded float64
# values, writing each chunk's results before reading the next: memory stays bounded
# for inputs kept on disk, however long.
PREDICT_CHUNK_BYTES = 64 * 2**20


def predict_chunks(
    model_dir: Path,
    path: str,
    read: readers.ReadOptions = MODEL_COLUMNS,
    batch_size: int = PREDICT_BATCH,
    progress: Progress | None = None,
) -> Iterator[Predictions]:
    """Labels and probabilities for the sequences in ``path``, chunk after chunk, in input
    order (labels in the input are ignored)."""
    files, proba_of, _ = _open_model(model_dir)
    read = preprocessing.read_options(files.preprocessing, read)
    sequences = readers.read_sequences(path, dataclasses.replace(read, require_labels=False))
    inputs = preprocessing.transform_inputs(files.preprocessing, sequences)
    prep = files.preprocessing
    classes = prep.output_labels
    n, steps, features = inputs.shape
    on_batch = _counter(progress, n)
    rows = max(1, PREDICT_CHUNK_BYTES // (steps * features * 8) // batch_size) * batch_size
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        proba = proba_of(inputs[start:stop], sequences.lengths[start:stop], batch_size, on_batch)
        yield Predictions(
            ids=sequences.ids[start:stop],
            labels=[classes[i] for i in proba.argmax(axis=1)],
            proba=proba,
            classes=classes,
        )


def predict(
    model_dir: Path,
    path: str,
    read: readers.ReadOptions = MODEL_COLUMNS,
    batch_size: int = PREDICT_BATCH,
) -> Predictions:
    """Labels and probabilities for every sequence in ``path`` (labels there are ignored)."""
    chunks = list(predict_chunks(model_dir, path, read, batch_size))
    return Predictions(
        ids=[ident for chunk in chunks for ident in chunk.ids],
        labels=[label for chunk in chunks for label in chunk.labels],
        proba=np.concatenate([chunk.proba for chunk in chunks]),
        classes=chunks[0].classes,
    )


@dataclasses.dataclass(frozen=True)
class Scored:
    """A model's scores on labelled data, with what they were computed from.

    Attributes:
      report: the metrics.
      classes: the class labels, as the user wrote them, in class-index order.
      sequences: the data as read (raw values, before scaling).
      true: int[n], the true class indices.
      proba: float[n, classes], the model's probabilities.
      model: the version of the model that scored them.
      attribute: ``(rows, classes) -> [float32[length, features]]``: how much each step and
        feature of those sequences drove the model toward those classes (integrated
        gradients on the scaled inputs, see ``attribution``).
    """

    report: Report
    classes: list[Any]
    sequences: readers.SequenceData
    true: np.ndarray
    proba: np.ndarray
    model: checkpoint.ModelFiles
    attribute: Callable[[np.ndarray, np.ndarray], list[np.ndarray]]


def score(
    model_dir: Path,
    path: str,
    read: readers.ReadOptions = MODEL_COLUMNS,
    progress: Progress | None = None,
) -> Scored:
    """Score the model on labelled data (``rnnfc eval``; ``rnnfc report --data``)."""
    files, proba_of, attribute = _open_model(model_dir)
    prep = files.preprocessing
    read = preprocessing.read_options(prep, read)
    sequences = readers.read_sequences(path, dataclasses.replace(read, require_labels=True))
    inputs = preprocessing.transform_inputs(prep, sequences)
    true = preprocessing.encode_labels(prep, sequences)
    proba = proba_of(inputs, sequences.lengths, PREDICT_BATCH, _counter(progress, len(sequences)))
    classes = prep.output_labels

    def attribute_rows(rows: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
        rows = np.asarray(rows)
        return attribute(np.asarray(inputs[rows]), sequences.lengths[rows], targets)

    report = dataclasses.replace(
        classification_report(true, proba),
        unknown_token_rate=preprocessing.unknown_token_rate(prep, sequences),
    )
    return Scored(report, classes, sequences, true, proba, files, attribute_rows)


def evaluate(
    model_dir: Path,
    path: str,
    read: readers.ReadOptions = MODEL_COLUMNS,
    progress: Progress | None = None,
) -> tuple[Report, list[Any]]:
    """Metrics of the model on labelled data; returns the report and the class labels."""
    scored = score(model_dir, path, read, progress)
    return scored.report, scored.classes


def export_model(
    model_dir: Path,
    path: Path,
    output_format: str | None = None,
    platforms: str = DEFAULT_PLATFORMS,
) -> dict[str, Any]:
    """Write the model as a file that runs without rnnfc (``rnnfc export``); the format
    is ``output_format``, else the one ``path``'s ending names; ``platforms`` as
    ``--platforms`` takes them. Returns the metadata written beside it."""
    from rnnfc_cli import export

    chosen_format = export.choose_format(path, output_format)
    chosen = parse_platforms(platforms)  # before the model is loaded
    files, model, params = load_model(model_dir)
    if chosen_format == "onnx":
        return export.export_onnx(files, params, path)
    return export.export_stablehlo(files, model, params, path, chosen)


def describe(model_dir: Path) -> dict[str, Any]:
    """What a model directory holds, without loading jax (the weights are only checked
    to be there)."""
    files, _ = checkpoint.read_model(model_dir)
    return description(files)


def description(files: checkpoint.ModelFiles) -> dict[str, Any]:
    """What ``rnnfc info`` shows of one version of a model."""
    prep = files.preprocessing
    return {
        "model_dir": str(files.path),
        "model": files.model.to_dict(),
        "train": files.train.to_dict(),
        "labels": prep.output_labels,
        "features": prep.num_features,
        "feature_names": None if prep.feature_names is None else list(prep.feature_names),
        "columns": {
            "features": list(prep.selected),
            "ignore": list(prep.ignored),
            "derived": list(prep.derived_features),
        },
        "input_format": prep.source_format,
        "normalize": prep.normalize,
        "tokens": None
        if not prep.categorical
        else {
            "columns": list(prep.categorical),
            "vocabulary_sizes": [len(v) for v in prep.vocabularies],
            "embedding_sizes": [size for _, size in files.model.embeddings],
            "split": prep.token_split if prep.tokens else None,
        },
        "summary": files.summary,
        "rnnfc_version": files.rnnfc_version,
    }
