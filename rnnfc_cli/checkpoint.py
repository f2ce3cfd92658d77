"""The model directory: config, preprocessing, Orbax checkpoint, metrics log, summary.

A model directory is built in a hidden staging directory beside its final place
(``.NAME.partial``) and moved there with one ``rename`` when training succeeds, so a model
directory is always complete: a failed or interrupted run never leaves a half-written one,
and ``--force`` replaces an old model only once the new one is whole. While training, the
staging directory also holds the latest complete train state (``train_state/``, an Orbax
CheckpointManager directory); a run that is killed or interrupted after its first snapshot
leaves the staging directory behind, and ``rnnfc train --resume`` continues from it.

Layout::

    MODEL_DIR/
      config.json         format version, rnnfc version, model and training settings
                          (as the library uses them: ``ModelConfig``, ``TrainConfig``)
      config.toml         the run's settings as ``rnnfc train`` took them
                          (``settings.RunSettings``; ``--config`` reads it back)
      preprocessing.json  label vocabulary, feature scaling, input schema
      checkpoints/        Orbax CheckpointManager directory holding the best parameters
                          (one checkpoint, numbered by the best epoch)
      params.msgpack      the same best parameters, for fast loading by predict and eval
      metrics.jsonl       one JSON object per finished epoch
      validation.json     the best model's scores on the validation set (as rnnfc eval)
      summary.json        the training summary; written last

Orbax is the checkpoint format; ``params.msgpack`` is a lightweight inference copy so that
``rnnfc predict`` need not import Orbax (over a second of start-up on a small CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rnnfc_cli import __version__
from rnnfc_cli.atomic import write_bytes_atomic
from rnnfc_cli.config import ModelConfig, TrainConfig, front_end_pools, parse_conv
from rnnfc_cli.errors import BadInputError, ModelDirError
from rnnfc_cli.preprocessing import Preprocessing
from rnnfc_cli.snapshots import SnapshotStore, writing_manager
from rnnfc_cli.staging import (
    REPLACED_PREFIX,
    TRAIN_STATE_DIR,
    Staging,
    read_json,
    saved_steps,
    staging_dir,
    write_json_atomic,
)

# The highest format this version reads. 2: the conv features are averaged between the
# blocks (``ModelConfig.block_pooling``), which readers of format 1 would skip as an
# unknown key and take the maximum instead; a directory without that is written as 1, so
# that older versions still read it.
FORMAT_VERSION = 2


def format_version(model: ModelConfig) -> int:
    """The lowest format version that describes ``model`` whole (see ``FORMAT_VERSION``):
    2 where ``front_end_pools`` pools between the blocks and they average."""
    blocks = len(parse_conv(model.conv))
    between = front_end_pools(model.downsample, model.block_pool, blocks)[:-1]
    return 2 if model.block_pooling == "mean" and any(p > 1 for p in between) else 1


CONFIG_FILE = "config.json"
PREPROCESSING_FILE = "preprocessing.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
VALIDATION_FILE = "validation.json"
CHECKPOINT_DIR = "checkpoints"
INFERENCE_PARAMS_FILE = "params.msgpack"
_REQUIRED = (CONFIG_FILE, PREPROCESSING_FILE, SUMMARY_FILE, CHECKPOINT_DIR)


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """The settings of a saved model, readable without jax or Orbax.

    Attributes:
      validation: the best model's scores on the validation set (``validation.json``;
        empty for models saved without it).
      history: the metrics log, one record per finished epoch.
    """

    path: Path
    model: ModelConfig
    train: TrainConfig
    preprocessing: Preprocessing
    summary: dict[str, Any]
    rnnfc_version: str
    validation: dict[str, Any]
    history: list[dict[str, Any]]


class ModelDirWriter:
    """Builds a model directory in staging and moves it into place on ``commit``.

    Use as a context manager. Leaving the block without ``commit`` (an error, Ctrl-C)
    leaves any existing model directory untouched; the staging directory is kept when it
    holds a train-state snapshot (so the run can resume) and removed otherwise. The lock
    and the staging directory are ``staging.Staging``'s, the snapshots
    ``snapshots.SnapshotStore``'s; this class writes the files of the directory. The
    arguments are ``Staging``'s (whose ``marker`` is ``CONFIG_FILE``).
    """

    def __init__(self, target: Path, *, force: bool, resume: bool = False, run_key: str = ""):
        self._staging = Staging(
            target, force=force, resume=resume, run_key=run_key, marker=CONFIG_FILE
        )
        self.resumed = self._staging.resumed
        self._dir = self._staging.path
        self._snapshots = SnapshotStore(self._dir / TRAIN_STATE_DIR, self._staging.save_error)

    def __enter__(self) -> ModelDirWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._snapshots.close()
        finally:
            self._staging.close()

    def write_settings(
        self, model: ModelConfig, train: TrainConfig, preprocessing: Preprocessing
    ) -> None:
        config = {
            "format_version": format_version(model),
            "rnnfc_version": __version__,
            "model": model.to_dict(),
            "train": train.to_dict(),
        }
        with self._writing():
            write_json_atomic(self._dir / CONFIG_FILE, config)
            write_json_atomic(self._dir / PREPROCESSING_FILE, preprocessing.to_dict())

    def write_file(self, name: str, content: bytes) -> None:
        """Write one more file into the model directory (atomically)."""
        with self._writing():
            write_bytes_atomic(self._dir / name, content)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self._writing(), (self._dir / METRICS_FILE).open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace the metrics log with ``records`` (a resumed run's finished epochs)."""
        text = "".join(json.dumps(record) + "\n" for record in records)
        with self._writing():
            write_bytes_atomic(self._dir / METRICS_FILE, text.encode())

    def save_snapshot(self, step: int, arrays: Any, progress: dict[str, Any]) -> None:
        """Save the complete train state as the snapshot of ``step`` (see
        ``SnapshotStore.save``)."""
        self._snapshots.save(step, arrays, progress)

    def load_snapshot(self) -> tuple[Any, dict[str, Any]] | None:
        """The latest saved train state as (arrays, progress), or None when none is."""
        return self._snapshots.load()

    def commit(self, summary: dict[str, Any], params: Any, best_epoch: int) -> Path:
        """Save the best parameters, finish every write, then move the directory into place.

        Args:
          summary: the training summary, written last.
          params: the best parameters: the Orbax checkpoint of ``best_epoch`` and the
            lightweight inference copy.
        """
        import orbax.checkpoint as ocp
        from flax import serialization

        self._snapshots.close()
        try:
            with writing_manager(self._dir / CHECKPOINT_DIR) as manager:
                manager.save(best_epoch, args=ocp.args.StandardSave(params), force=True)
            write_bytes_atomic(
                self._dir / INFERENCE_PARAMS_FILE, serialization.msgpack_serialize(params)
            )
            write_json_atomic(self._dir / SUMMARY_FILE, summary)
        except Exception as err:  # Orbax wraps I/O errors in several types.
            raise self._staging.save_error(err) from None
        return self._staging.publish()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Any OSError inside becomes a ``SaveFailedError`` saying what is intact."""
        try:
            yield
        except OSError as err:
            raise self._staging.save_error(err) from None


class NullWriter:
    """Stands in for ``ModelDirWriter`` in processes other than 0 of a multi-process run:
    they train in step with process 0, which alone writes the model directory (and alone
    resumes: a multi-process run cannot resume yet)."""

    resumed = False

    def __enter__(self) -> NullWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def write_settings(
        self, model: ModelConfig, train: TrainConfig, preprocessing: Preprocessing
    ) -> None:
        del model, train, preprocessing

    def write_file(self, name: str, content: bytes) -> None:
        del name, content

    def append_metrics(self, record: dict[str, Any]) -> None:
        del record

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        del records

    def save_snapshot(self, step: int, arrays: Any, progress: dict[str, Any]) -> None:
        del step, arrays, progress

    def load_snapshot(self) -> tuple[Any, dict[str, Any]] | None:
        return None

    def commit(self, summary: dict[str, Any], params: Any, best_epoch: int) -> None:
        del summary, params, best_epoch


# How often ``read_model`` starts again when the model directory was replaced under it,
# waiting a little longer each time (0.66 s of waiting in all, besides the reads).
READ_ATTEMPTS = 12


def read_model(
    path: Path, load_params: Callable[[ModelFiles], Any] | None = None
) -> tuple[ModelFiles, Any]:
    """The settings and parameters of one version of a model directory, never a mix of two.

    ``rnnfc train --force`` may replace the directory while this reads it (see
    ``publish``). Every version has its own ``summary.json`` (it holds a fresh
    ``model_id``): the files are read between two reads of it, and read again when the two
    differ or a file vanished in a replacement. What is returned is held in memory, so a
    long prediction finishes on the version it started with.

    Args:
      load_params: reads the parameters (``restore_params``); without it the weights are
        only checked to be there and None is returned for them.
    """
    for attempt in range(1, READ_ATTEMPTS + 1):
        before = _version_token(path)
        try:
            files = read_model_files(path)
            params = check_weights(path) if load_params is None else load_params(files)
        except ModelDirError:
            if attempt == READ_ATTEMPTS or not _being_replaced(path, before):
                raise
        else:
            if _version_token(path) == before:
                return files, params
        time.sleep(0.01 * attempt)
    raise ModelDirError(f"{path}: replaced {READ_ATTEMPTS} times while being read; try again")


def _version_token(path: Path) -> bytes | None:
    try:
        return (path / SUMMARY_FILE).read_bytes()
    except OSError:
        return None


def _being_replaced(path: Path, before: bytes | None) -> bool:
    """Whether a model directory that failed to read is in the middle of a replacement."""
    if _version_token(path) != before:
        return True
    prefix = REPLACED_PREFIX.format(name=path.name)
    try:
        return any(sibling.name.startswith(prefix) for sibling in path.parent.iterdir())
    except OSError:
        return False


def read_model_files(path: Path) -> ModelFiles:
    """Read and check everything but the weights."""
    if not path.is_dir():
        if staging_dir(path).is_dir():
            raise ModelDirError(
                f"{path}: not trained yet: an interrupted training run is saved in "
                f"{staging_dir(path)}; finish it with rnnfc train DATA -m {path} --resume"
            )
        raise ModelDirError(f"{path}: no such model directory")
    if not (path / CONFIG_FILE).exists():
        raise ModelDirError(f"{path}: is not an rnnfc model directory (no {CONFIG_FILE})")
    missing = [name for name in _REQUIRED if not (path / name).exists()]
    if missing:
        raise ModelDirError(
            f"{path}: incomplete model directory (missing {', '.join(missing)}); train it again"
        )
    config = read_json(path / CONFIG_FILE)
    version = config.get("format_version") if isinstance(config, dict) else None
    if not isinstance(version, int):
        raise ModelDirError(f"{path / CONFIG_FILE}: no format_version; not an rnnfc model")
    if version > FORMAT_VERSION:
        raise ModelDirError(
            f"{path / CONFIG_FILE}: format version {version} was written by a newer rnnfc "
            f"({config.get('rnnfc_version')}); this is {__version__}: upgrade rnnfc"
        )
    # A value out of range is damage too (the configs check their fields when built).
    damage = (KeyError, TypeError, ValueError, AttributeError, BadInputError)
    written_by = config.get("rnnfc_version")
    try:
        _refuse_unknown(path / CONFIG_FILE, config["model"], ModelConfig, written_by)
        model = ModelConfig.from_dict(config["model"])
        train = TrainConfig.from_dict(config["train"])
    except damage as err:
        raise ModelDirError(
            f"{path / CONFIG_FILE}: corrupted model settings ({err!r}){_other_writer(written_by)}"
        ) from None
    try:
        prep_data = read_json(path / PREPROCESSING_FILE)
        _refuse_unknown(path / PREPROCESSING_FILE, prep_data, Preprocessing, written_by)
        prep = Preprocessing.from_dict(prep_data)
    except damage as err:
        raise ModelDirError(
            f"{path / PREPROCESSING_FILE}: corrupted ({err!r}){_other_writer(written_by)}"
        ) from None
    return ModelFiles(
        path=path,
        model=model,
        train=train,
        preprocessing=prep,
        summary=read_json(path / SUMMARY_FILE),
        rnnfc_version=str(config.get("rnnfc_version")),
        validation=read_json(path / VALIDATION_FILE) if (path / VALIDATION_FILE).exists() else {},
        history=_read_history(path / METRICS_FILE),
    )


def _other_writer(written_by: Any) -> str:
    """What to add to a damage report when another version wrote the directory: a value
    this version does not accept (a cell type added later, say) may be new, not damage."""
    if not written_by or str(written_by) == __version__:
        return ""
    return (
        f"; written by rnnfc {written_by}, this is {__version__}: if that is newer, upgrade rnnfc"
    )


def _refuse_unknown(file: Path, data: Any, settings: type, written_by: Any) -> None:
    """Refuse settings this rnnfc does not know: a newer version wrote them, and what
    they change (the model's layers, the scaling of its inputs) would be left out here,
    so the model would predict something else without a word. Training settings are not
    checked: they do not change what a saved model predicts."""
    if not isinstance(data, dict):
        raise TypeError(f"{type(data).__name__}, not an object")
    unknown = sorted(set(data) - {field.name for field in dataclasses.fields(settings)})
    if unknown:
        writer = f"rnnfc {written_by}" if written_by else "another rnnfc"
        raise ModelDirError(
            f"{file}: setting {', '.join(map(repr, unknown))} is unknown to rnnfc "
            f"{__version__} (the model was written by {writer}): upgrade rnnfc"
        )


def _read_history(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirError(f"{path}: unreadable or corrupted ({err})") from None


def check_weights(path: Path) -> None:
    """Refuse a model directory whose weights are gone, by listing a folder only (no jax,
    no Orbax): its Orbax checkpoint must hold a finished step."""
    directory = (path / CHECKPOINT_DIR).absolute()
    if not saved_steps(directory):
        raise ModelDirError(f"{directory}: holds no checkpoint; train the model again")


def restore_params(path: Path, make_target: Callable[[], Any]) -> Any:
    """The saved parameters.

    Reads the inference copy when it is there and readable, else the Orbax checkpoint,
    restored onto ``make_target()`` (a tree of ``jax.ShapeDtypeStruct``). The target is
    only built for Orbax: tracing the model for it costs a quarter of a second.
    """
    copy = path / INFERENCE_PARAMS_FILE
    if copy.is_file():
        params = _read_inference_copy(copy)
        if params is not None:
            return params
    return _restore_orbax(path, make_target())


def _read_inference_copy(path: Path) -> Any | None:
    from flax import serialization

    try:
        params = serialization.msgpack_restore(path.read_bytes())
    except Exception:  # A damaged copy falls back to the Orbax checkpoint.
        return None
    return params if isinstance(params, dict) and params else None


def _restore_orbax(path: Path, target: Any) -> Any:
    import orbax.checkpoint as ocp

    directory = (path / CHECKPOINT_DIR).absolute()
    try:
        with ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True)
        ) as manager:
            step = manager.latest_step()
            if step is None:
                raise ModelDirError(f"{directory}: holds no checkpoint; train the model again")
            return manager.restore(step, args=ocp.args.StandardRestore(target))
    except ModelDirError:
        raise
    except Exception as err:  # Orbax raises many types for damaged files.
        raise ModelDirError(f"{directory}: cannot restore the checkpoint ({err})") from None
