"""Augmentation (``--augment``): padded steps never reach a valid step, crops are windows of
the sequence, mixup pairs real rows and mixes the loss as it mixed the inputs, id features
are left alone, and the option is checked, kept in the model directory and reproducible."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import TINY_FLAGS

from rnnfc_cli import augment
from rnnfc_cli.cli import main
from rnnfc_cli.config import TrainConfig, canonical_augment, parse_augment
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.train import Batch, weighted_loss_sums

LENGTHS = np.array([7, 3, 10, 1, 5], np.int32)


def _nan_padded(features: int = 2, seed: int = 0) -> np.ndarray:
    """Distinct finite values on valid steps (step index + row / 10), NaN beyond."""
    rng = np.random.default_rng(seed)
    x = np.full((len(LENGTHS), 10, features), np.nan, np.float32)
    for row, length in enumerate(LENGTHS):
        x[row, :length] = np.arange(length)[:, None] + row / 10 + rng.normal(0, 0.01, features)
    return x


def test_parse_fills_in_default_strengths_and_keeps_the_order():
    assert parse_augment("crop:0.7,jitter") == (("crop", 0.7), ("jitter", 0.03))
    assert parse_augment("none") == parse_augment("") == ()
    assert canonical_augment("mixup, scale:0.2") == "mixup:0.2,scale:0.2"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("warp", "--augment 'warp'"),
        ("crop:1.5", "crop's strength"),
        ("crop:0", "crop's strength"),
        ("jitter:x", "not a number"),
        ("crop,crop:0.5", "named twice"),
    ],
)
def test_bad_specs_are_usage_errors_naming_the_option(spec, expected):
    with pytest.raises(BadInputError, match=expected):
        TrainConfig(augment=spec)


@pytest.mark.parametrize("spec", ["jitter:0.5", "scale:0.5", "crop:0.5", "mixup:0.4", "crop,mixup"])
def test_no_padded_value_reaches_a_valid_step_and_padding_is_zero(spec):
    x = _nan_padded()
    weights = np.ones(len(LENGTHS), np.float32)
    out, lengths, _ = augment.augmented(spec, x, LENGTHS, weights, jax.random.key(3))
    out, lengths = np.asarray(out), np.asarray(lengths)
    assert np.all(lengths >= 1)
    for row, length in enumerate(lengths):
        assert np.isfinite(out[row, :length]).all(), (spec, row)
        assert (out[row, length:] == 0).all(), (spec, row)


def test_a_crop_is_a_window_of_the_valid_steps_of_the_asked_share():
    x = _nan_padded(features=1)
    for seed in range(20):
        out, lengths = augment.crop(x, LENGTHS, jax.random.key(seed), 0.6)
        out, lengths = np.asarray(out), np.asarray(lengths)
        np.testing.assert_array_equal(lengths, np.ceil(0.6 * LENGTHS))
        for row, kept in enumerate(lengths):
            window = out[row, :kept, 0]
            start = int(np.argmin(np.abs(x[row, : LENGTHS[row], 0] - window[0])))
            np.testing.assert_array_equal(window, x[row, start : start + kept, 0])
            assert start + kept <= LENGTHS[row]


def test_crops_start_everywhere_they_may():
    x = _nan_padded(features=1)
    starts = set()
    for seed in range(60):
        out, _ = augment.crop(x, LENGTHS, jax.random.key(seed), 0.5)
        starts.add(int(np.round(np.asarray(out)[2, 0, 0] - 0.2)))  # row 2: 10 steps, keeps 5
    assert starts == set(range(6))


def test_mixup_pairs_only_real_rows_and_mixes_to_the_longer_length():
    x = np.nan_to_num(_nan_padded())
    weights = np.array([1, 1, 0, 1, 0], np.float32)
    for seed in range(10):
        mixed, lengths, mix = augment.mixup(x, LENGTHS, weights, jax.random.key(seed), 0.4)
        partner, share = np.asarray(mix.partner), np.asarray(mix.share)
        assert set(partner) <= {0, 1, 3}
        assert ((share >= 0) & (share <= 1)).all()
        np.testing.assert_array_equal(lengths, np.maximum(LENGTHS, LENGTHS[partner]))
        expected = share[:, None, None] * x + (1 - share[:, None, None]) * x[partner]
        np.testing.assert_allclose(mixed, expected, rtol=1e-6)


def test_the_mixed_loss_is_the_mix_of_the_two_labels_losses():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2], np.int32)
    class_weights = np.array([1.0, 2.0, 0.5], np.float32)
    batch = Batch(np.zeros((4, 1, 1), np.float32), np.ones(4, np.int32), labels, np.ones(4))
    mix = augment.Mix(np.array([1, 0, 3, 2]), np.array([0.7, 0.2, 1.0, 0.5], np.float32))
    got = weighted_loss_sums(logits, batch, class_weights, 0.0, mix)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    own, other = labels, labels[mix.partner]
    targets = np.zeros((4, 3))
    targets[np.arange(4), own] += mix.share
    targets[np.arange(4), other] += 1 - mix.share
    weights = mix.share * class_weights[own] + (1 - mix.share) * class_weights[other]
    expected = (weights * -(targets * log_p).sum(-1)).sum()
    np.testing.assert_allclose(float(got.loss_sum), expected, rtol=1e-5)
    assert int(got.correct) == int((logits.argmax(-1) == labels).sum())


def test_noise_and_scaling_leave_id_features_alone():
    x = np.nan_to_num(_nan_padded(features=3))
    x[..., 2] = np.arange(x.shape[1])  # an id feature
    weights = np.ones(len(LENGTHS), np.float32)
    out, _, _ = augment.augmented("jitter:1,scale:1", x, LENGTHS, weights, jax.random.key(0), 1)
    out = np.asarray(out)
    valid = np.arange(x.shape[1])[None, :] < LENGTHS[:, None]
    np.testing.assert_array_equal(out[..., 2][valid], x[..., 2][valid])
    assert not np.allclose(out[..., :2][valid], x[..., :2][valid])


def test_noise_and_scaling_leave_a_sequences_scale_inputs_alone():
    from rnnfc_cli import api, preprocessing, readers

    raw = _nan_padded(features=1) * np.array([1, 10, 100, 1000, 3], np.float32)[:, None, None]
    data = readers.SequenceData(
        np.nan_to_num(raw), LENGTHS, np.array(list("ababa")), list(range(5)), None, "npz", "x"
    )
    arrays = api._arrays(preprocessing.fit(data, "sequence+scale"), data)
    assert arrays.scale_inputs == 1  # what fit hands the step as fixed, with any token ids
    weights = np.ones(len(LENGTHS), np.float32)
    out, _, _ = augment.augmented(
        "jitter:1,scale:1", arrays.inputs, LENGTHS, weights, jax.random.key(0), arrays.scale_inputs
    )
    out = np.asarray(out)
    np.testing.assert_array_equal(out[..., 1], arrays.inputs[..., 1])
    assert not np.allclose(out[..., 0], arrays.inputs[..., 0])


def test_augmented_training_is_kept_in_the_model_and_reproducible(tmp_path, tiny_data, capsys):
    def train(name):
        args = ["train", str(tiny_data["train_long"]), "-m", str(tmp_path / name), *TINY_FLAGS]
        assert main([*args, "--augment", "crop:0.8,jitter,scale,mixup", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    first, second = train("a"), train("b")
    assert first["best_val_loss"] == second["best_val_loss"]
    assert main(["info", str(tmp_path / "a"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"]["augment"] == "crop:0.8,jitter:0.03,scale:0.1,mixup:0.2"
    plain = ["train", str(tiny_data["train_long"]), "-m", str(tmp_path / "c"), *TINY_FLAGS]
    assert main([*plain, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best_val_loss"] != first["best_val_loss"]
