"""The model directory: config, preprocessing, Orbax checkpoint, metrics log, summary.

A model directory is built in a hidden staging directory beside its final place and moved
there with one ``rename`` when training succeeds, so a model directory is always complete:
a failed or interrupted run never leaves a half-written one, and ``--force`` replaces an
old model only once the new one is whole.

Layout::

    MODEL_DIR/
      config.json         format version, rnnfc version, model and training settings
      preprocessing.json  label vocabulary, feature scaling, input schema
      checkpoints/        Orbax CheckpointManager directory holding the best parameters
      params.msgpack      the same best parameters, for fast loading by predict and eval
      metrics.jsonl       one JSON object per finished epoch
      summary.json        the training summary; written last

Orbax is the checkpoint format; ``params.msgpack`` is a lightweight inference copy so that
``rnnfc predict`` need not import Orbax (over a second of start-up on a small CPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnfc_cli import __version__
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.errors import ModelDirError
from rnnfc_cli.preprocessing import Preprocessing

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PREPROCESSING_FILE = "preprocessing.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
INFERENCE_PARAMS_FILE = "params.msgpack"
_REQUIRED = (CONFIG_FILE, PREPROCESSING_FILE, SUMMARY_FILE, CHECKPOINT_DIR)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename into place."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, then renamed
        "wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """The settings of a saved model, readable without jax or Orbax."""

    path: Path
    model: ModelConfig
    train: TrainConfig
    preprocessing: Preprocessing
    summary: dict[str, Any]
    rnnfc_version: str


class ModelDirWriter:
    """Builds a model directory in staging and moves it into place on ``commit``.

    Use as a context manager: leaving the block without ``commit`` (an error, Ctrl-C)
    removes the staging directory and leaves any existing model directory untouched.
    A lock file beside the target keeps a second training from writing the same model
    directory at the same time; a lock left by a process that no longer runs is taken over.
    """

    def __init__(self, target: Path, *, force: bool):
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.lock = target.parent / f".{target.name}.lock"
        _acquire_lock(self.lock, target)
        try:
            _check_target(target, force)
            self.staging = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent)
            )
        except BaseException:
            self.lock.unlink(missing_ok=True)
            raise
        self._manager = None

    def __enter__(self) -> ModelDirWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._close_manager()
            if self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self.lock.unlink(missing_ok=True)

    def write_settings(
        self, model: ModelConfig, train: TrainConfig, preprocessing: Preprocessing
    ) -> None:
        write_json_atomic(
            self.staging / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "rnnfc_version": __version__,
                "model": model.to_dict(),
                "train": train.to_dict(),
            },
        )
        write_json_atomic(self.staging / PREPROCESSING_FILE, preprocessing.to_dict())

    def append_metrics(self, record: dict[str, Any]) -> None:
        with (self.staging / METRICS_FILE).open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def save_params(self, step: int, params: Any) -> None:
        """Save ``params`` as the checkpoint for ``step``; only the newest is kept."""
        import orbax.checkpoint as ocp

        if self._manager is None:
            self._manager = ocp.CheckpointManager(
                (self.staging / CHECKPOINT_DIR).absolute(),
                options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
            )
        self._manager.save(step, args=ocp.args.StandardSave(params))

    def commit(self, summary: dict[str, Any], params: Any) -> Path:
        """Finish every write, then move the directory into place atomically.

        Args:
          summary: the training summary, written last.
          params: the final parameters, also kept as the lightweight inference copy.
        """
        from flax import serialization

        self._close_manager()
        write_bytes_atomic(
            self.staging / INFERENCE_PARAMS_FILE, serialization.msgpack_serialize(params)
        )
        write_json_atomic(self.staging / SUMMARY_FILE, summary)
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
            os.replace(self.target, old)
        os.replace(self.staging, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def _close_manager(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def _acquire_lock(lock: Path, target: Path) -> None:
    """Create ``lock`` holding this process id, or refuse while its owner still runs."""
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and _process_exists(owner):
                raise ModelDirError(
                    f"{target}: another training (process {owner}) is writing this model "
                    f"directory; wait for it, or remove {lock} if that process is gone"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process was killed
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise ModelDirError(f"{lock}: cannot take the lock for {target}")


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_target(target: Path, force: bool) -> None:
    if not target.exists():
        return
    if not force:
        raise ModelDirError(
            f"{target}: already exists; choose another --model-dir or pass --force to replace it"
        )
    if not target.is_dir():
        raise ModelDirError(f"{target}: exists and is not a directory; not replacing it")
    if any(target.iterdir()) and not (target / CONFIG_FILE).is_file():
        raise ModelDirError(
            f"{target}: is not an rnnfc model directory; --force only replaces model directories"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirError(f"{path}: unreadable or corrupted ({err})") from None


def read_model_files(path: Path) -> ModelFiles:
    """Read and check everything but the weights."""
    if not path.is_dir():
        raise ModelDirError(f"{path}: no such model directory")
    if not (path / CONFIG_FILE).exists():
        raise ModelDirError(f"{path}: is not an rnnfc model directory (no {CONFIG_FILE})")
    missing = [name for name in _REQUIRED if not (path / name).exists()]
    if missing:
        raise ModelDirError(
            f"{path}: incomplete model directory (missing {', '.join(missing)}); train it again"
        )
    config = _read_json(path / CONFIG_FILE)
    version = config.get("format_version") if isinstance(config, dict) else None
    if not isinstance(version, int):
        raise ModelDirError(f"{path / CONFIG_FILE}: no format_version; not an rnnfc model")
    if version > FORMAT_VERSION:
        raise ModelDirError(
            f"{path / CONFIG_FILE}: format version {version} was written by a newer rnnfc "
            f"({config.get('rnnfc_version')}); this is {__version__}: upgrade rnnfc"
        )
    try:
        return ModelFiles(
            path=path,
            model=ModelConfig.from_dict(config["model"]),
            train=TrainConfig.from_dict(config["train"]),
            preprocessing=Preprocessing.from_dict(_read_json(path / PREPROCESSING_FILE)),
            summary=_read_json(path / SUMMARY_FILE),
            rnnfc_version=str(config.get("rnnfc_version")),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ModelDirError(f"{path}: corrupted model settings ({err!r})") from None


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
