"""A model directory replaced (``train --force``) while it is read: one whole version or
the other, never a mix, never an error."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from replace_while_reading import make_versions, run

from rnnfc_cli import checkpoint, staging
from rnnfc_cli.errors import ModelDirError


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> tuple[list[Path], Path]:
    """Three saved models: hidden 8 (up/down), hidden 12 (up/down/flat), and hidden 8
    scaled for data ten times larger; and a test file all of them can score."""
    return make_versions(tmp_path_factory.mktemp("versions"))


@pytest.mark.parametrize("atomic_swap", [True, False], ids=["exchange", "two-renames"])
def test_a_model_replaced_while_it_is_read_is_read_again_whole(
    versions, tmp_path, monkeypatch, atomic_swap
):
    if not atomic_swap:
        monkeypatch.setattr(staging, "_exchange", lambda first, second: False)
    saved, _ = versions
    model_dir = tmp_path / "model"
    shutil.copytree(saved[0], model_dir)
    hidden_read = []

    def load_params(files):
        params = checkpoint.restore_params(files.path, lambda: None)
        if not hidden_read:  # the first read is overtaken by a replacement
            shutil.copytree(saved[1], staging.staging_dir(model_dir))
            staging.publish(staging.staging_dir(model_dir), model_dir)
        hidden_read.append(files.model.hidden)
        return params

    files, params = checkpoint.read_model(model_dir, load_params)
    assert hidden_read == [8, 12]
    assert files.model.hidden == 12 and len(files.preprocessing.labels) == 3
    alone = checkpoint.restore_params(saved[1], lambda: None)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, alone))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left behind


def test_a_read_waits_out_the_instant_between_two_renames(versions, tmp_path):
    saved, _ = versions
    model_dir = tmp_path / "model"
    aside = tmp_path / f"{staging.REPLACED_PREFIX.format(name='model')}123"
    shutil.copytree(saved[0], aside)  # the old model renamed aside, the new one not yet in

    def rename_in():
        time.sleep(0.1)
        shutil.copytree(saved[2], staging.staging_dir(model_dir))
        staging.staging_dir(model_dir).rename(model_dir)

    renaming = threading.Thread(target=rename_in)
    renaming.start()
    files, _ = checkpoint.read_model(model_dir)
    renaming.join()
    assert files.summary["model_id"] == checkpoint.read_model_files(saved[2]).summary["model_id"]


def test_a_missing_model_directory_is_an_error_at_once(tmp_path):
    started = time.monotonic()
    with pytest.raises(ModelDirError, match="no such model directory"):
        checkpoint.read_model(tmp_path / "nothing")
    assert time.monotonic() - started < 0.5


def test_readers_in_other_processes_see_whole_versions_while_it_is_replaced(versions, tmp_path):
    """A short run of ``tests/replace_while_reading.py`` (the README quotes a long one)."""
    saved, data = versions
    result = run(saved, data, tmp_path, swaps=300, readers=2)
    failures = {key: result[key] for key in ("errors", "torn", "examples")}
    assert result["errors"] == 0 and result["torn"] == 0, str(failures)
    assert sum(result[f"version_{i}"] > 0 for i in range(3)) >= 2, result
    assert result["leftovers"] == [], result


def test_weights_taken_away_while_they_are_listed_are_a_model_dir_error(
    versions, tmp_path, monkeypatch
):
    """The checkpoint folder can vanish between finding it and listing it (a replacement
    in between): that is a ModelDirError, which ``read_model`` retries, not an OSError."""
    saved, _ = versions
    listing = Path.iterdir

    def vanished(self):
        if self.name == checkpoint.CHECKPOINT_DIR:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", vanished)
    with pytest.raises(ModelDirError, match="holds no checkpoint"):
        checkpoint.check_weights(saved[0])
