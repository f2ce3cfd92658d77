"""Snapshots of a run's full train state, kept in its staging directory by Orbax, so that
``rnnfc train --resume`` continues where the run stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnfc_cli.errors import ModelDirError
from rnnfc_cli.staging import TRAIN_STATE_DIR, saved_steps, staging_dir


class SnapshotStore:
    """The train-state snapshots in ``directory`` (one kept: the latest); its Orbax
    manager opens on first use. ``save_error`` words a failed save."""

    def __init__(self, directory: Path, save_error):
        self.directory = directory
        self._save_error = save_error
        self._manager = None

    def save(self, step: int, arrays: Any, progress: dict[str, Any]) -> None:
        """Save the complete train state as the snapshot of ``step``.

        Orbax writes each checkpoint to a temporary directory and renames it when done,
        and removes the previous one only after that: a kill at any moment leaves the last
        complete snapshot readable. Saving is synchronous: on a small CPU the background
        save gained nothing (about 40 ms either way), and a failure (a full disk) is then
        reported at the step that caused it.
        """
        import orbax.checkpoint as ocp

        manager = self._open()
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
            raise self._save_error(err) from None

    def load(self) -> tuple[Any, dict[str, Any]] | None:
        """The latest snapshot as (arrays, progress), or None when none is saved."""
        return _restore_snapshot(self._open(), self.directory)

    def close(self) -> None:
        if self._manager is not None:
            manager, self._manager = self._manager, None
            try:
                manager.wait_until_finished()
            finally:
                manager.close()

    def _open(self):
        if self._manager is None:
            self._manager = writing_manager(self.directory)
        return self._manager


def read_snapshot(target: Path) -> tuple[Any, dict[str, Any]] | None:
    """The latest train-state snapshot of an interrupted run of ``target``, read-only."""
    import orbax.checkpoint as ocp

    directory = staging_dir(target) / TRAIN_STATE_DIR
    if not saved_steps(directory):
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


def writing_manager(directory: Path):
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
