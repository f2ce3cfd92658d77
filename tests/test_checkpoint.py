"""The model directory: exact round trip, atomic replacement, and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY_MODEL

from rnnfc_cli import api, checkpoint
from rnnfc_cli.callbacks import Callback
from rnnfc_cli.config import ModelConfig, TrainConfig
from rnnfc_cli.errors import ModelDirError
from rnnfc_cli.inference import (
    abstract_params,
    init_params,
    make_proba_fn,
    member_keys,
    predict_proba,
)
from rnnfc_cli.models import build_model
from rnnfc_cli.preprocessing import Preprocessing

PREP = Preprocessing(("a", "b"), "str", (0.0, 0.0), (1.0, 1.0), None, "npz")


def _request(tiny_data, model_dir: Path, **kwargs) -> api.TrainRequest:
    return api.TrainRequest(
        data=str(tiny_data["train_npz"]),
        model_dir=model_dir,
        model_options=TINY_MODEL,
        train=TrainConfig(epochs=1, batch_size=16, min_steps=0, val_split=0.25, refit="off"),
        **kwargs,
    )


def test_saved_and_restored_parameters_predict_identically(tmp_path):
    config = ModelConfig(2, 2, **TINY_MODEL)
    model = build_model(config)
    params = jax.device_get(init_params(model, member_keys(3, 2)))
    with checkpoint.ModelDirWriter(tmp_path / "m", force=False) as writer:
        writer.write_settings(config, TrainConfig(ensemble=2), PREP)
        writer.commit({"best_epoch": 1}, params, best_epoch=1)

    def target():
        return abstract_params(model, 2)

    restored = checkpoint.restore_params(tmp_path / "m", target)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, params, restored)))
    copy = tmp_path / "m" / checkpoint.INFERENCE_PARAMS_FILE
    copy.write_bytes(b"damaged")  # the Orbax checkpoint is the fallback, and agrees
    from_orbax = checkpoint.restore_params(tmp_path / "m", target)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, params, from_orbax)))
    inputs = np.random.default_rng(0).normal(size=(5, 6, 2)).astype(np.float32)
    lengths = np.array([6, 1, 3, 2, 5], np.int32)
    proba_fn = make_proba_fn(model)
    np.testing.assert_array_equal(
        predict_proba(proba_fn, params, inputs, lengths),
        predict_proba(proba_fn, restored, inputs, lengths),
    )
    files = checkpoint.read_model_files(tmp_path / "m")
    assert files.model == config and files.preprocessing == PREP


def test_existing_directory_is_refused_without_force(tiny_data, trained_model):
    before = sorted(p.name for p in trained_model.rglob("*"))
    with pytest.raises(ModelDirError, match=r"already exists.*--force"):
        api.train_model(_request(tiny_data, trained_model))
    assert sorted(p.name for p in trained_model.rglob("*")) == before


def test_force_refuses_a_directory_that_is_not_a_model(tiny_data, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("precious")
    with pytest.raises(ModelDirError, match="not an rnnfc model directory"):
        api.train_model(_request(tiny_data, tmp_path / "notes", force=True))
    assert (tmp_path / "notes" / "thesis.txt").read_text() == "precious"


class _Explode(Callback):
    def on_step(self, epoch, step_in_epoch):
        raise KeyboardInterrupt


def test_interrupted_training_leaves_the_old_model_whole_and_no_staging(tiny_data, tmp_path):
    model_dir = tmp_path / "m"
    api.train_model(_request(tiny_data, model_dir))
    summary = (model_dir / checkpoint.SUMMARY_FILE).read_text()
    with pytest.raises(KeyboardInterrupt):
        api.train_model(_request(tiny_data, model_dir, force=True), _Explode())
    assert (model_dir / checkpoint.SUMMARY_FILE).read_text() == summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    api.predict(model_dir, str(tiny_data["train_npz"]))


def test_force_replaces_a_model_once_the_new_one_is_complete(tiny_data, tmp_path):
    model_dir = tmp_path / "m"
    api.train_model(_request(tiny_data, model_dir))
    (model_dir / "stale.txt").write_text("old")
    api.train_model(_request(tiny_data, model_dir, force=True))
    assert not (model_dir / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: (d / checkpoint.SUMMARY_FILE).unlink(), "incomplete model directory"),
        (lambda d: (d / checkpoint.CONFIG_FILE).write_text("{not json"), "corrupted"),
        (
            lambda d: (d / checkpoint.CONFIG_FILE).write_text(
                json.dumps({"format_version": 99, "rnnfc_version": "9.0"})
            ),
            "newer rnnfc",
        ),
        (lambda d: shutil.rmtree(d / checkpoint.CHECKPOINT_DIR), "missing checkpoints"),
        (
            lambda d: (
                [p.unlink() for p in d.rglob("*") if p.is_file() and "check" in str(p)]
                + [(d / checkpoint.INFERENCE_PARAMS_FILE).unlink()]
            ),
            "restore",
        ),
    ],
)
def test_damaged_model_directory_is_reported(trained_model, tmp_path, tiny_data, damage, expected):
    copy = tmp_path / "copy"
    shutil.copytree(trained_model, copy)
    damage(copy)
    with pytest.raises(ModelDirError, match=expected):
        api.predict(copy, str(tiny_data["test_long"]))


def _with_key(file: Path, section: str | None, key: str) -> None:
    data = json.loads(file.read_text())
    (data if section is None else data[section])[key] = 2
    file.write_text(json.dumps(data))


def test_settings_a_newer_rnnfc_wrote_are_refused_where_they_change_predictions(
    trained_model, tmp_path, tiny_data
):
    """An older reader that skipped a model layer or an input scaling it did not know would
    predict something else without a word: unknown model and preprocessing settings are
    refused; an unknown training setting, which changes no prediction, is not."""
    for section, file in [("model", checkpoint.CONFIG_FILE), (None, checkpoint.PREPROCESSING_FILE)]:
        copy = tmp_path / f"copy-{file}"
        shutil.copytree(trained_model, copy)
        _with_key(copy / file, section, "from_the_future")
        with pytest.raises(ModelDirError, match=f"{file}: setting 'from_the_future' is unknown"):
            api.predict(copy, str(tiny_data["test_long"]))
    copy = tmp_path / "copy-train"
    shutil.copytree(trained_model, copy)
    _with_key(copy / checkpoint.CONFIG_FILE, "train", "from_the_future")
    expected = api.predict(trained_model, str(tiny_data["test_long"])).proba
    np.testing.assert_array_equal(api.predict(copy, str(tiny_data["test_long"])).proba, expected)


def test_a_value_this_version_refuses_from_another_version_suggests_an_upgrade(
    trained_model, tmp_path, tiny_data
):
    copy = tmp_path / "copy"
    shutil.copytree(trained_model, copy)
    config = json.loads((copy / checkpoint.CONFIG_FILE).read_text())
    config["model"]["cell"], config["rnnfc_version"] = "transformer", "9.0"
    (copy / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match=r"corrupted .*written by rnnfc 9\.0.*upgrade rnnfc"):
        api.predict(copy, str(tiny_data["test_long"]))


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(ModelDirError, match="no such model directory"):
        checkpoint.read_model_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="not an rnnfc model directory"):
        checkpoint.read_model_files(tmp_path / "empty")


def test_a_second_training_is_locked_out_and_a_stale_lock_is_taken_over(tiny_data, tmp_path):
    import subprocess
    import sys

    model_dir = tmp_path / "m"
    lock = tmp_path / ".m.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{sleeper.pid}\n")
        with pytest.raises(ModelDirError, match=f"another training \\(process {sleeper.pid}\\)"):
            api.train_model(_request(tiny_data, model_dir))
        assert lock.exists() and not model_dir.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    api.train_model(_request(tiny_data, model_dir))  # the killed owner's lock is stale
    assert model_dir.is_dir() and not lock.exists()


def test_the_multi_process_stand_in_has_the_writers_whole_interface():
    """Processes other than 0 get ``NullWriter``: whatever training calls on the writer,
    it must have too, with the same parameters."""
    import inspect

    def interface(cls):
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") or name in ("__enter__", "__exit__")
        }

    writer = interface(checkpoint.ModelDirWriter)
    null = interface(checkpoint.NullWriter)
    assert set(null) == set(writer)
    for name, signature in writer.items():
        assert list(null[name].parameters) == list(signature.parameters), name
    assert checkpoint.NullWriter().load_snapshot() is None
