"""Process-wide JAX settings, applied once before the first compile.

The persistent compilation cache makes every command after the first skip XLA
compilation: ``rnnfc predict`` in a CI job reuses what ``rnnfc train`` compiled.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CACHE_ENV = "RNNFC_CACHE_DIR"

# XLA:CPU's concurrency-optimized scheduler runs independent loops side by side; with two
# or more recurrent scans in one program (a bidirectional layer, stacked layers in an
# ensemble) execution deadlocks on a 2-core machine (jax 0.10, seen here). The default
# scheduler runs them one after the other.
_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)

# XLA:CPU runs a recurrent scan's per-step matrix products on one core (they are too
# small for its intra-op threading), so a training step used one core of several. One
# CPU device per core, with batches split over them, runs the scans side by side.
_CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def set_xla_flags() -> None:
    """Add rnnfc's XLA flags to ``XLA_FLAGS``; must run before JAX starts its backend.

    A flag already in ``XLA_FLAGS`` (a device count, say) is left as the user set it.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = (*_XLA_FLAGS, f"{_CPU_DEVICES_FLAG}={cpu_cores()}")
    missing = [f for f in wanted if f.split("=")[0] not in flags]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()


def _drop_closed_loop_errors(unraisable) -> None:
    """``sys.unraisablehook`` that ignores one known-harmless error, passing on the rest.

    After a failed Orbax save (a full disk), TensorStore still completes the writes it
    had queued and hands each result to an asyncio loop Orbax has already closed; each
    prints ``RuntimeError: Event loop is closed`` with a traceback, after rnnfc's own
    one-line report. Nothing is lost by dropping them.
    """
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def cache_dir() -> Path:
    """``$RNNFC_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnfc`` or ``~/.cache/rnnfc``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnfc"


def configure_jax() -> None:
    """Set rnnfc's XLA flags and turn on the persistent compilation cache (skipped if it
    cannot be created). The flags take effect only if JAX has not started its backend
    yet: call this before anything else uses JAX's devices."""
    set_xla_flags()
    import jax

    # Orbax logs routine notices (e.g. on read-only restores) through absl as warnings,
    # and a failed save once per worker thread, traceback and all, as errors: rnnfc
    # reports those failures itself in one line (RNNFC_DEBUG keeps Orbax's errors).
    debug = bool(os.environ.get("RNNFC_DEBUG"))
    logging.getLogger("absl").setLevel(logging.ERROR if debug else logging.CRITICAL)
    if not debug:
        sys.unraisablehook = _drop_closed_loop_errors
    directory = cache_dir() / "jax"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# Environment variables whose presence (with more than one task) marks a cluster launch
# that ``jax.distributed.initialize()`` can configure itself.
# (SLURM_STEP_NUM_TASKS is set by srun, not by sbatch: a plain rnnfc in a batch script
# allocated several tasks stays a single process.)
_CLUSTER_SIZE_VARIABLES = ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def start_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> bool:
    """Join a multi-process run (one process per host) through ``jax.distributed``.

    With a coordinator, the given values are used; without, a cluster launch (SLURM,
    Open MPI, a Cloud TPU pod) is detected from its environment. Must run before JAX
    starts a backend. On CPU the processes talk over TCP (gloo). Returns whether a
    multi-process run was started.
    """
    set_xla_flags()  # before jax.distributed starts the backend
    import jax

    sizes = [os.environ.get(name, "1") for name in _CLUSTER_SIZE_VARIABLES]
    clustered = any(size.isdigit() and int(size) > 1 for size in sizes) or bool(
        os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",")
    )
    if coordinator is None and not clustered:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    return True
