"""Where a model directory is built before it is published: the lock beside it, the
staging directory (kept while it holds an interrupted run's snapshots) and the publish
that moves the finished directory into place, atomically where the system can.

Only files and folders: no jax, no Orbax (``rnnfc train --resume`` checks for a snapshot
before importing either).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rnnfc_cli.atomic import write_bytes_atomic
from rnnfc_cli.errors import ModelDirError, SaveFailedError

TRAIN_STATE_DIR = "train_state"
RESUME_FILE = "resume.json"


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirError(f"{path}: unreadable or corrupted ({err})") from None


def staging_dir(target: Path) -> Path:
    """Where the model directory ``target`` is built, and an interrupted run is kept."""
    return target.parent / f".{target.name}.partial"


def has_snapshot(target: Path) -> bool:
    """Whether an interrupted training of the model directory ``target`` saved a train state
    that ``--resume`` can continue (by listing a folder: no jax, no Orbax)."""
    return bool(saved_steps(staging_dir(target) / TRAIN_STATE_DIR))


def saved_steps(directory: Path) -> list[int]:
    """Steps of the finished checkpoints in an Orbax directory (unfinished ones are
    temporary directories whose names are not numbers); none when it is missing, also when
    a replacement of its model directory takes it away while it is listed."""
    try:
        children = list(directory.iterdir())
    except OSError:  # missing, not a directory, or gone in a replacement
        return []
    return sorted(int(child.name) for child in children if child.name.isdigit())


class Staging:
    """The lock and the staging directory of one training of the model directory
    ``target``.

    A lock file beside the target keeps a second training from writing the same model
    directory at the same time; a lock left by a process that no longer runs is taken
    over. ``close`` (always; the writer's ``__exit__``) releases the lock and removes the
    staging directory unless it holds a snapshot, so an interrupted run can resume.

    Args:
      target: the model directory to write.
      force: replace an existing model directory, and discard an interrupted run.
      resume: continue the interrupted run kept in staging (an error when there is none).
      run_key: identifies the data and settings of a run; resuming needs the same key
        (and inherits the interrupted run's ``force``).
      marker: the file every model directory holds: ``force`` replaces only those.
    """

    def __init__(self, target: Path, *, force: bool, resume: bool, run_key: str, marker: str):
        self.target = target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ModelDirError(f"{target}: cannot create its folder ({err.strerror})") from None
        self.lock = target.parent / f".{target.name}.lock"
        self.path = staging_dir(target)
        self.marker = marker
        _acquire_lock(self.lock, target)
        try:
            self.resumed = self._prepare(force, resume)
            if self.resumed:
                run = read_json(self.path / RESUME_FILE)
                if run.get("run_key") != run_key:
                    raise ModelDirError(
                        f"{self.target}: --resume: the data or settings differ from those of "
                        f"the interrupted run in {self.path} (or another version of rnnfc "
                        "saved it); resume with the same ones, or start over with --force"
                    )
                self._check_target(force or bool(run.get("force")))
            else:
                self._check_target(force)
                try:
                    self.path.mkdir()
                    run = {"run_key": run_key, "force": force}
                    write_json_atomic(self.path / RESUME_FILE, run)
                except OSError as err:
                    raise ModelDirError(f"{self.path}: cannot write ({err.strerror})") from None
        except BaseException:
            self.lock.unlink(missing_ok=True)
            raise

    def _prepare(self, force: bool, resume: bool) -> bool:
        """Clear or keep what an earlier run left in staging; True when resuming it."""
        saved = saved_steps(self.path / TRAIN_STATE_DIR)
        if resume:
            if not saved:
                raise ModelDirError(
                    f"{self.target}: --resume: no interrupted run to continue (nothing saved "
                    f"in {self.path}); train without --resume"
                )
            return True
        if saved and not force:
            raise ModelDirError(
                f"{self.target}: an interrupted run is saved in {self.path} (step "
                f"{saved[-1]}); add --resume to continue it, or --force to start over"
            )
        if self.path.exists():
            shutil.rmtree(self.path)
        return False

    def _check_target(self, force: bool) -> None:
        target = self.target
        if not target.exists():
            return
        if not force:
            raise ModelDirError(
                f"{target}: already exists; choose another --model-dir or pass --force to "
                "replace it"
            )
        if not target.is_dir():
            raise ModelDirError(f"{target}: exists and is not a directory; not replacing it")
        if any(target.iterdir()) and not (target / self.marker).is_file():
            raise ModelDirError(
                f"{target}: is not an rnnfc model directory; --force only replaces model "
                "directories"
            )

    def save_error(self, err: Exception) -> SaveFailedError:
        """A failed save, e.g. a full disk: what failed, and that the last snapshot is
        intact."""
        if isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        elif "No space left on device" in str(err):  # how TensorStore words ENOSPC
            reason = "No space left on device"
        else:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        saved = saved_steps(self.path / TRAIN_STATE_DIR)
        kept = (
            f"the snapshot of step {saved[-1]} in {self.path} is intact: free space, then add "
            "--resume"
            if saved
            else "nothing was saved"
        )
        return SaveFailedError(f"{self.path}: cannot save ({reason}); {kept}")

    def publish(self) -> Path:
        """Drop the run's snapshots and move the finished directory into place."""
        shutil.rmtree(self.path / TRAIN_STATE_DIR, ignore_errors=True)
        (self.path / RESUME_FILE).unlink(missing_ok=True)
        try:
            publish(self.path, self.target)
        except OSError as err:
            raise self.save_error(err) from None
        return self.target

    def close(self) -> None:
        """Release the lock; keep the staging directory only if it holds a snapshot."""
        try:
            if self.path.exists() and not saved_steps(self.path / TRAIN_STATE_DIR):
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.lock.unlink(missing_ok=True)


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
