"""One owner for every setting: ``RunSettings`` names, defaults, checks and saves what a
``rnnfc train`` command line asks for, and the library gets the same checks."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
import typer

from rnnfc_cli import api
from rnnfc_cli.cli import app
from rnnfc_cli.config import ModelConfig, TrainConfig, resolve_conv
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.settings import RunSettings

# The train options that never change what a run computes: where output goes, how it is
# shown, how the run is resumed or launched. Every other option must be a setting.
NOT_SETTINGS = {
    "data",
    "model_dir",
    "force",
    "resume",
    "checkpoint_every",
    "json_output",
    "quiet",
    "verbose",
    "tensorboard",
    "config",
    "coordinator",
    "num_processes",
    "process_id",
}


def _train_command():
    command = typer.main.get_command(app)
    return command.commands["train"]


def test_every_train_option_is_a_setting_or_named_as_output_and_defaults_agree():
    params = {param.name: param for param in _train_command().params}
    assert set(params) == set(RunSettings.names()) | NOT_SETTINGS
    for name in RunSettings.names():
        assert params[name].default == getattr(RunSettings, name), name


def test_the_defaults_are_valid_and_become_the_configs_defaults():
    settings = RunSettings()
    options = settings.model_options()
    assert options["conv"] == "auto"  # the data decides: numbers or tokens
    options["conv"] = resolve_conv(options["conv"], tokens=False)
    model = ModelConfig(num_features=1, num_classes=2, **options)
    defaults = ModelConfig(num_features=1, num_classes=2)
    names = [field.name for field in dataclasses.fields(model)]
    changed = {name for name in names if getattr(model, name) != getattr(defaults, name)}
    # A new model gets the conv front end (saved models without the field have none),
    # and patch, downsample and the pooling between blocks are chosen from the data (0
    # until then).
    assert changed == {"conv", "block_pool", "patch", "downsample"}
    assert settings.train_config() == TrainConfig()


def test_the_toml_form_round_trips():
    settings = RunSettings(
        val="v.csv", features="a,b*", pool="last,mean", dense="16,8", epochs="7", seeds=3,
        buckets=False, warmup=4, time_features=True, elapsed_time=True,
    )  # fmt: skip
    again = RunSettings.from_mapping(tomllib.loads(settings.to_toml().decode()), "config.toml")
    assert again == settings
    # Lists, as a hand-written file may hold them, join with commas; - and _ are one.
    written = {"pool": ["last", "mean"], "dense": [16, 8], "batch-size": 4}
    read = RunSettings.from_mapping(written, "train.toml")
    assert (read.pool, read.dense, read.batch_size) == ("last,mean", "16,8", 4)
    with pytest.raises(BadInputError, match=re.escape("train.toml: unknown setting 'hiden'")):
        RunSettings.from_mapping({"hiden": 8}, "train.toml")


@pytest.mark.parametrize(
    ("build", "flag"),
    [
        (lambda: TrainConfig(lr=0.0), "--lr 0.0"),
        (lambda: TrainConfig(val_split=1.0), "--val-split 1.0"),
        (lambda: TrainConfig(batch_size=0), "--batch-size 0"),
        (lambda: TrainConfig(ensemble=0), "--seeds 0"),
        (lambda: TrainConfig(monitor="f1"), "--monitor 'f1'"),
        (lambda: TrainConfig(weight_decay=float("nan")), "--weight-decay nan"),
        (lambda: ModelConfig(2, 2, dropout=1.5), "--dropout 1.5"),
        (lambda: ModelConfig(2, 2, pool="last,avg"), "--pool 'avg'"),
        (lambda: ModelConfig(2, 2, pool="mean,mean"), "each method at most once"),
        (lambda: ModelConfig(2, 2, conv="0:3"), "--conv '0:3'"),
        (lambda: ModelConfig(2, 2, layers=0), "--layers 0"),
        (lambda: ModelConfig(2, 2, dense=(4, 0)), "--dense '4,0'"),
        (lambda: RunSettings(patch="x"), "--patch 'x'"),
        (lambda: RunSettings(normalize="minmax"), "--normalize 'minmax'"),
        (lambda: RunSettings(elapsed_time=True), "--elapsed-time"),
    ],
)
def test_the_library_checks_what_the_command_line_checks(build, flag):
    with pytest.raises(BadInputError, match=re.escape(flag)):
        build()


def test_a_library_request_from_settings_is_the_command_lines(tiny_data, tmp_path):
    settings = RunSettings(hidden=8, dense="8", conv="4:3", epochs="2", batch_size=8)
    request = api.TrainRequest.from_settings(
        settings, data=str(tiny_data["train_npz"]), model_dir=tmp_path / "m"
    )
    assert request.train.epochs == 2 and request.train.batch_size == 8
    assert request.model_options["dense"] == (8,) and request.model_options["patch"] == 0
    saved = tomllib.loads(request.extra_files["config.toml"].decode())
    assert RunSettings.from_mapping(saved, "config.toml") == settings


def test_library_values_are_normalised_and_checked_like_flags():
    # JSON and hand-written calls give lists; the model must stay hashable (it keys the
    # compiled functions).
    config = ModelConfig(2, 2, dense=[4, 3])
    assert config.dense == (4, 3) and hash(config)
    with pytest.raises(BadInputError, match="--layers 0"):
        ModelConfig(2, 2, layers=0, conv="none")
    with pytest.raises(BadInputError, match=re.escape("--conv '4:x'")):
        ModelConfig(2, 2, conv="4:x")
    with pytest.raises(BadInputError, match=re.escape("--normalize 'Feature'")):
        api.TrainRequest(
            data="d.csv",
            model_dir=Path("m"),
            model_options={},
            train=TrainConfig(),
            normalize="Feature",
        )
