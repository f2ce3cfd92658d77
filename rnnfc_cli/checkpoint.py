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

import dataclasses
import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnfc_cli import __version__
from rnnfc_cli.atomic import write_bytes_atomic
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.errors import BadInputError, ModelDirError, SaveFailedError
from rnnfc_cli.preprocessing import Preprocessing

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PREPROCESSING_FILE = "preprocessing.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
VALIDATION_FILE = "validation.json"
CHECKPOINT_DIR = "checkpoints"
INFERENCE_PARAMS_FILE = "params.msgpack"
TRAIN_STATE_DIR = "train_state"
RESUME_FILE = "resume.json"
_REQUIRED = (CONFIG_FILE, PREPROCESSING_FILE, SUMMARY_FILE, CHECKPOINT_DIR)


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


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


def staging_dir(target: Path) -> Path:
    """Where the model directory ``target`` is built, and an interrupted run is kept."""
    return target.parent / f".{target.name}.partial"


class ModelDirWriter:
    """Builds a model directory in staging and moves it into place on ``commit``.

    Use as a context manager. Leaving the block without ``commit`` (an error, Ctrl-C)
    leaves any existing model directory untouched; the staging directory is kept when it
    holds a train-state snapshot (so the run can resume) and removed otherwise.
    A lock file beside the target keeps a second training from writing the same model
    directory at the same time; a lock left by a process that no longer runs is taken over.

    Args:
      target: the model directory to write.
      force: replace an existing model directory, and discard an interrupted run.
      resume: continue the interrupted run kept in staging (an error when there is none).
      run_key: identifies the data and settings of a run; resuming needs the same key
        (and inherits the interrupted run's ``force``).
    """

    def __init__(self, target: Path, *, force: bool, resume: bool = False, run_key: str = ""):
        self.target = target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ModelDirError(f"{target}: cannot create its folder ({err.strerror})") from None
        self.lock = target.parent / f".{target.name}.lock"
        self.staging = staging_dir(target)
        _acquire_lock(self.lock, target)
        try:
            self.resumed = self._prepare_staging(force, resume)
            if self.resumed:
                run = _read_json(self.staging / RESUME_FILE)
                if run.get("run_key") != run_key:
                    raise ModelDirError(
                        f"{self.target}: --resume: the data or settings differ from those of "
                        f"the interrupted run in {self.staging} (or another version of rnnfc "
                        "saved it); resume with the same ones, or start over with --force"
                    )
                _check_target(target, force or bool(run.get("force")))
            else:
                _check_target(target, force)
                try:
                    self.staging.mkdir()
                    run = {"run_key": run_key, "force": force}
                    write_json_atomic(self.staging / RESUME_FILE, run)
                except OSError as err:
                    raise ModelDirError(f"{self.staging}: cannot write ({err.strerror})") from None
        except BaseException:
            self.lock.unlink(missing_ok=True)
            raise
        self._state_manager = None

    def _prepare_staging(self, force: bool, resume: bool) -> bool:
        """Clear or keep what an earlier run left in staging; True when resuming it."""
        saved = _saved_steps(self.staging / TRAIN_STATE_DIR)
        if resume:
            if not saved:
                raise ModelDirError(
                    f"{self.target}: --resume: no interrupted run to continue (nothing saved "
                    f"in {self.staging}); train without --resume"
                )
            return True
        if saved and not force:
            raise ModelDirError(
                f"{self.target}: an interrupted run is saved in {self.staging} (step "
                f"{saved[-1]}); add --resume to continue it, or --force to start over"
            )
        if self.staging.exists():
            shutil.rmtree(self.staging)
        return False

    def __enter__(self) -> ModelDirWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._close_manager()
            if self.staging.exists() and not _saved_steps(self.staging / TRAIN_STATE_DIR):
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self.lock.unlink(missing_ok=True)

    def write_settings(
        self, model: ModelConfig, train: TrainConfig, preprocessing: Preprocessing
    ) -> None:
        config = {
            "format_version": FORMAT_VERSION,
            "rnnfc_version": __version__,
            "model": model.to_dict(),
            "train": train.to_dict(),
        }
        try:
            write_json_atomic(self.staging / CONFIG_FILE, config)
            write_json_atomic(self.staging / PREPROCESSING_FILE, preprocessing.to_dict())
        except OSError as err:
            raise _save_error(self.staging, err) from None

    def write_file(self, name: str, content: bytes) -> None:
        """Write one more file into the model directory (atomically)."""
        try:
            write_bytes_atomic(self.staging / name, content)
        except OSError as err:
            raise _save_error(self.staging, err) from None

    def append_metrics(self, record: dict[str, Any]) -> None:
        try:
            with (self.staging / METRICS_FILE).open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:
            raise _save_error(self.staging, err) from None

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace the metrics log with ``records`` (a resumed run's finished epochs)."""
        text = "".join(json.dumps(record) + "\n" for record in records)
        try:
            write_bytes_atomic(self.staging / METRICS_FILE, text.encode())
        except OSError as err:
            raise _save_error(self.staging, err) from None

    def save_snapshot(self, step: int, arrays: Any, progress: dict[str, Any]) -> None:
        """Save the complete train state as the checkpoint of ``step``.

        Orbax writes each checkpoint to a temporary directory and renames it when done,
        and removes the previous one only after that: a kill at any moment leaves the last
        complete snapshot readable. Saving is synchronous: on a small CPU the background
        save gained nothing (about 40 ms either way), and a failure (a full disk) is then
        reported at the step that caused it.
        """
        import orbax.checkpoint as ocp

        manager = self._train_state_manager()
        if step in manager.all_steps():  # a resumed run snapshots its first step again
            return
        try:
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(arrays), progress=ocp.args.JsonSave(progress)
                ),
            )
        except Exception as err:  # Orbax wraps I/O errors in several types.
            raise _save_error(self.staging, err) from None

    def load_snapshot(self) -> tuple[Any, dict[str, Any]] | None:
        """The latest saved train state as (arrays, progress), or None when none is."""
        return _restore_snapshot(self._train_state_manager(), self.staging / TRAIN_STATE_DIR)

    def commit(self, summary: dict[str, Any], params: Any, best_epoch: int) -> Path:
        """Save the best parameters, finish every write, then move the directory into place.

        Args:
          summary: the training summary, written last.
          params: the best parameters: the Orbax checkpoint of ``best_epoch`` and the
            lightweight inference copy.
        """
        import orbax.checkpoint as ocp
        from flax import serialization

        self._close_manager()
        try:
            with _writing_manager(self.staging / CHECKPOINT_DIR) as manager:
                manager.save(best_epoch, args=ocp.args.StandardSave(params), force=True)
            write_bytes_atomic(
                self.staging / INFERENCE_PARAMS_FILE, serialization.msgpack_serialize(params)
            )
            write_json_atomic(self.staging / SUMMARY_FILE, summary)
        except Exception as err:  # Orbax wraps I/O errors in several types.
            raise _save_error(self.staging, err) from None
        shutil.rmtree(self.staging / TRAIN_STATE_DIR, ignore_errors=True)
        (self.staging / RESUME_FILE).unlink(missing_ok=True)
        try:
            publish(self.staging, self.target)
        except OSError as err:
            raise _save_error(self.staging, err) from None
        return self.target

    def _train_state_manager(self):

        if self._state_manager is None:
            self._state_manager = _writing_manager(self.staging / TRAIN_STATE_DIR)
        return self._state_manager

    def _close_manager(self) -> None:
        if self._state_manager is not None:
            manager, self._state_manager = self._state_manager, None
            try:
                manager.wait_until_finished()
            finally:
                manager.close()


def publish(staging: Path, target: Path) -> None:
    """Move the finished model directory ``staging`` to ``target``, replacing any model there.

    Where the system can (Linux's ``renameat2`` with ``RENAME_EXCHANGE``, on local file
    systems) the two directories swap places in one atomic step, so ``target`` always holds
    a whole model. Elsewhere (NFS, macOS) the old model is renamed aside first and the new
    one renamed in: ``target`` is missing for that instant, and ``read_model`` retries
    across it. Either way the previous model is deleted once it is out of the way: readers
    hold what they need in memory (see ``read_model``), so none is left reading it.
    """
    if not target.exists():
        os.replace(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = target.parent / f"{REPLACED_PREFIX.format(name=target.name)}{os.getpid()}"
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)  # put the previous model back
        raise
    shutil.rmtree(old, ignore_errors=True)


# Where ``publish`` keeps a replaced model for the instant it takes to rename the new one
# in, when the two cannot be swapped in one step; readers that find it wait for the new one.
REPLACED_PREFIX = ".{name}.old-"


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system or the file
    system cannot (no ``renameat2``, or a file system without ``RENAME_EXCHANGE``)."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    path, fd = ctypes.c_char_p, ctypes.c_int
    renameat2.argtypes = [fd, path, fd, path, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise OSError(code, os.strerror(code), str(second))
    return True


def _writing_manager(directory: Path):
    """An Orbax CheckpointManager that keeps one checkpoint in ``directory``, saving
    synchronously from this process alone."""
    import orbax.checkpoint as ocp

    directory.mkdir(exist_ok=True)  # Orbax cannot create it with ``active_processes``
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            create=False,
            enable_async_checkpointing=False,
            multiprocessing_options=_this_process_only(),
        ),
    )


def _this_process_only():
    """Orbax options for saving from this process alone.

    In a multi-process run the parameters are replicated and saved as host arrays, so
    process 0 writes the model directory by itself; without this Orbax would wait at a
    barrier for the other processes, which never save.
    """
    import jax
    import orbax.checkpoint as ocp

    index = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=index, active_processes={index})


class NullWriter:
    """Stands in for ``ModelDirWriter`` in processes other than 0 of a multi-process run:
    they train in step with process 0, which alone writes the model directory."""

    resumed = False

    def __enter__(self) -> NullWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def write_settings(self, *args: Any) -> None:
        del args

    def write_file(self, name: str, content: bytes) -> None:
        del name, content

    def append_metrics(self, record: dict[str, Any]) -> None:
        del record

    def save_snapshot(self, step: int, arrays: Any, progress: dict[str, Any]) -> None:
        del step, arrays, progress

    def commit(self, summary: dict[str, Any], params: Any, best_epoch: int) -> None:
        del summary, params, best_epoch


def read_snapshot(target: Path) -> tuple[Any, dict[str, Any]] | None:
    """The latest train-state snapshot of an interrupted run of ``target``, read-only."""
    import orbax.checkpoint as ocp

    directory = staging_dir(target) / TRAIN_STATE_DIR
    if not _saved_steps(directory):
        return None
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(directory.absolute(), options=options) as manager:
        return _restore_snapshot(manager, directory)


def _restore_snapshot(manager: Any, directory: Path) -> tuple[Any, dict[str, Any]] | None:
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return None
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(), progress=ocp.args.JsonRestore()
            ),
        )
    except Exception as err:  # Orbax raises many types for damaged files.
        raise ModelDirError(
            f"{directory}: cannot restore step {step} ({err}); start over with --force"
        ) from None
    return restored.state, restored.progress


def has_snapshot(target: Path) -> bool:
    """Whether an interrupted training of the model directory ``target`` saved a train state
    that ``--resume`` can continue (by listing a folder: no jax, no Orbax)."""
    return bool(_saved_steps(staging_dir(target) / TRAIN_STATE_DIR))


def _saved_steps(directory: Path) -> list[int]:
    """Steps of the finished checkpoints in an Orbax directory (unfinished ones are
    temporary directories whose names are not numbers)."""
    if not directory.is_dir():
        return []
    return sorted(int(child.name) for child in directory.iterdir() if child.name.isdigit())


def _save_error(staging: Path, err: Exception) -> SaveFailedError:
    """A failed save, e.g. a full disk: what failed, and that the last snapshot is intact."""
    if isinstance(err, OSError) and err.strerror:
        reason = err.strerror
    elif "No space left on device" in str(err):  # how TensorStore words ENOSPC
        reason = "No space left on device"
    else:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    saved = _saved_steps(staging / TRAIN_STATE_DIR)
    kept = (
        f"the snapshot of step {saved[-1]} in {staging} is intact: free space, then add --resume"
        if saved
        else "nothing was saved"
    )
    return SaveFailedError(f"{staging}: cannot save ({reason}); {kept}")


# A lock file without a process id is being written by its owner, unless it is older.
_LOCK_WRITE_SECONDS = 10.0


def _acquire_lock(lock: Path, target: Path) -> None:
    """Create ``lock`` holding this process id, or refuse while its owner still runs.

    The id is written to a temporary file that is then hard-linked into place, so the
    lock never exists without it; a lock left by a process that no longer runs is stale
    and taken over.
    """
    draft = lock.with_name(f"{lock.name}.{os.getpid()}")
    try:
        draft.write_text(f"{os.getpid()}\n")
    except OSError as err:
        raise ModelDirError(f"{target}: cannot write beside it ({err.strerror})") from None
    try:
        for _ in range(2):
            try:
                os.link(draft, lock)
                return
            except FileExistsError:
                owner = _lock_owner(lock)
                if owner is None and _age(lock) < _LOCK_WRITE_SECONDS:
                    owner = -1  # being written: held
                if owner is not None and (owner == -1 or _process_exists(owner)):
                    who = "" if owner == -1 else f" (process {owner})"
                    raise ModelDirError(
                        f"{target}: another training{who} is writing this model "
                        f"directory; wait for it, or remove {lock} if that process is gone"
                    ) from None
                lock.unlink(missing_ok=True)  # stale: its process was killed
            except OSError as err:
                raise ModelDirError(f"{lock}: cannot take the lock ({err.strerror})") from None
        raise ModelDirError(f"{lock}: cannot take the lock for {target}")
    finally:
        draft.unlink(missing_ok=True)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


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
    config = _read_json(path / CONFIG_FILE)
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
    try:
        model = ModelConfig.from_dict(config["model"])
        train = TrainConfig.from_dict(config["train"])
    except damage as err:
        raise ModelDirError(f"{path / CONFIG_FILE}: corrupted model settings ({err!r})") from None
    try:
        prep = Preprocessing.from_dict(_read_json(path / PREPROCESSING_FILE))
    except damage as err:
        raise ModelDirError(f"{path / PREPROCESSING_FILE}: corrupted ({err!r})") from None
    return ModelFiles(
        path=path,
        model=model,
        train=train,
        preprocessing=prep,
        summary=_read_json(path / SUMMARY_FILE),
        rnnfc_version=str(config.get("rnnfc_version")),
        validation=_read_json(path / VALIDATION_FILE) if (path / VALIDATION_FILE).exists() else {},
        history=_read_history(path / METRICS_FILE),
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
    if not _saved_steps(directory):
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
