"""Process-wide JAX settings, applied once before the first compile.

The persistent compilation cache makes every command after the first skip XLA
compilation: ``rnnfc predict`` in a CI job reuses what ``rnnfc train`` compiled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

CACHE_ENV = "RNNFC_CACHE_DIR"


def cache_dir() -> Path:
    """``$RNNFC_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnfc`` or ``~/.cache/rnnfc``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnfc"


def configure_jax() -> None:
    """Turn on the persistent compilation cache (skipped if it cannot be created)."""
    import jax

    # Orbax logs routine notices (e.g. on read-only restores) through absl as warnings.
    logging.getLogger("absl").setLevel(logging.ERROR)
    directory = cache_dir() / "jax"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
