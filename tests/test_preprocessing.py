"""Fitted preprocessing: scaling, vocabulary, schema checks and the stratified split."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnfc_cli import preprocessing
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers import SequenceData


def _data(inputs, lengths, labels=None, names=None):
    inputs = np.asarray(inputs, dtype=np.float64)
    return SequenceData(
        inputs=inputs,
        lengths=np.asarray(lengths),
        labels=None if labels is None else np.asarray(labels),
        ids=list(range(len(inputs))),
        feature_names=names,
        source_format="npz",
        source="mem",
    )


def test_scaling_uses_valid_steps_only_and_zeroes_padding():
    inputs = [[[1.0, 10.0], [3.0, 30.0]], [[5.0, 50.0], [0.0, 0.0]]]
    data = _data(inputs, [2, 1], ["a", "b"])
    prep = preprocessing.fit(data)
    np.testing.assert_allclose(prep.feature_mean, [3.0, 30.0])
    np.testing.assert_allclose(prep.feature_std, [np.std([1, 3, 5]), np.std([10, 30, 50])])
    out = preprocessing.transform_inputs(prep, data)
    assert out.dtype == np.float32
    assert out[1, 1].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(out[0, 0], [(1 - 3) / np.std([1, 3, 5])] * 2, rtol=1e-6)


def test_constant_feature_does_not_divide_by_zero():
    data = _data([[[2.0]], [[2.0]]], [1, 1], ["a", "b"])
    out = preprocessing.transform_inputs(preprocessing.fit(data), data)
    assert np.isfinite(out).all()


def test_one_class_is_refused():
    with pytest.raises(BadInputError, match="at least two classes"):
        preprocessing.fit(_data([[[1.0]], [[2.0]]], [1, 1], ["a", "a"]))


def test_named_features_are_reordered_and_mismatches_refused():
    train = _data([[[1.0, 2.0]], [[3.0, 4.0]]], [1, 1], ["a", "b"], names=("x", "y"))
    prep = preprocessing.fit(train)
    swapped = _data([[[2.0, 1.0]], [[4.0, 3.0]]], [1, 1], names=("y", "x"))
    np.testing.assert_array_equal(
        preprocessing.transform_inputs(prep, swapped), preprocessing.transform_inputs(prep, train)
    )
    other = dataclasses.replace(swapped, feature_names=("y", "z"))
    with pytest.raises(BadInputError, match=r"missing feature columns \['x'\]"):
        preprocessing.transform_inputs(prep, other)
    with pytest.raises(BadInputError, match="has 1 features per step; the model was trained on 2"):
        preprocessing.transform_inputs(prep, _data([[[1.0]]], [1]))


def test_unseen_labels_are_counted_and_named():
    prep = preprocessing.fit(_data([[[1.0]], [[2.0]]], [1, 1], ["a", "b"]))
    with pytest.raises(BadInputError, match="2 sequences have labels the model never saw: 'c'"):
        preprocessing.encode_labels(prep, _data([[[1.0]]] * 3, [1, 1, 1], ["c", "a", "c"]))


def test_preprocessing_round_trips_through_dict():
    prep = preprocessing.fit(_data([[[1.0]], [[2.0]]], [1, 1], ["10", "9"], names=("x",)))
    assert prep.labels == ("9", "10")
    assert prep.output_label("10") == 10
    assert preprocessing.Preprocessing.from_dict(prep.to_dict()) == prep


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=2, max_size=6),
    fraction=st.floats(0.05, 0.5),
    seed=st.integers(0, 1000),
)
def test_stratified_split_partitions_and_keeps_every_class_in_training(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    train, val = preprocessing.stratified_split(labels, fraction, seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert set(labels[train]) == set(range(len(counts)))
    if len(labels) > len(counts):
        assert len(val) >= 1
    # Each class holds its share of the asked-for total within one, unless capped at
    # count - 1 (the total actually held can then fall short of the one asked for).
    target = max(1, round(len(labels) * fraction))
    for c, count in enumerate(counts):
        held = int((labels[val] == c).sum())
        assert held <= max(count - 1, 0)
        assert abs(held - count * target / len(labels)) <= 1.0 + 1e-9 or held == count - 1


def test_sequence_normalisation_scales_each_sequence_by_itself():
    inputs = [[[1.0], [3.0], [0.0]], [[100.0], [300.0], [200.0]]]
    data = _data(inputs, [2, 3], ["a", "b"])
    prep = preprocessing.fit(data, "sequence")
    out = preprocessing.transform_inputs(prep, data)
    np.testing.assert_allclose(out[0, :2, 0], [-1.0, 1.0], rtol=1e-6)
    assert out[0, 2, 0] == 0.0
    np.testing.assert_allclose(out[1, :, 0], np.array([-1, 1, 0]) / np.sqrt(2 / 3), rtol=1e-6)
    none = preprocessing.transform_inputs(preprocessing.fit(data, "none"), data)
    np.testing.assert_array_equal(none[1, :, 0], [100.0, 300.0, 200.0])


def test_sequence_scale_keeps_each_sequences_log_scale_as_one_more_input():
    rng = np.random.default_rng(0)
    shape = rng.normal(size=(6, 2))
    amplitudes = np.array([[1.0, 2.0], [10.0, 2.0], [100.0, 3.0], [1000.0, 5.0]])
    inputs = np.zeros((5, 8, 2))
    inputs[:4, :6] = shape[None] * amplitudes[:, None, :] + 7.0  # same shape, four sizes
    inputs[4, :3] = 4.0  # constant: its std is 0
    lengths = [6, 6, 6, 6, 3]
    data = _data(inputs, lengths, ["a", "b", "a", "b", "a"])
    prep = preprocessing.fit(data, "sequence+scale")
    assert prep.model_features == 4  # two z-normalised features, then their two scales
    out = preprocessing.transform_inputs(prep, data)
    assert out.shape == (5, 8, 4)
    # The z-normalised part is "sequence"'s: one shape, whatever its size.
    plain = preprocessing.transform_inputs(preprocessing.fit(data, "sequence"), data)
    np.testing.assert_array_equal(out[:, :, :2], plain)
    np.testing.assert_allclose(
        out[1:4, :6, :2], np.broadcast_to(out[0, :6, :2], (3, 6, 2)), atol=1e-5
    )
    # The scale inputs: the log std standardised over the training sequences that move,
    # constant over valid steps, zero on padding, clipped for the constant sequence.
    logs = np.log(shape.std(axis=0)[None] * amplitudes)
    # The second feature's scales spread less than LOG_SCALE_MIN_SPREAD: divided by it.
    spread = np.maximum(logs.std(axis=0), preprocessing.LOG_SCALE_MIN_SPREAD)
    assert spread[0] > preprocessing.LOG_SCALE_MIN_SPREAD == spread[1]
    expected = (logs - logs.mean(axis=0)) / spread
    np.testing.assert_allclose(prep.log_scale_mean, logs.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out[:4, :6, 2:], np.repeat(expected[:, None], 6, axis=1), atol=1e-5)
    assert np.all(out[:, 6:, :] == 0) and np.all(out[4, 3:] == 0)
    np.testing.assert_array_equal(out[4, :3, 2:], -preprocessing.LOG_SCALE_CLIP)
    # Series already z-normalised: their scales differ by rounding alone, which must not
    # become inputs (float32 and float64 would disagree on them).
    normalised = _data(plain[:4], lengths[:4], ["a", "b", "a", "b"])
    refit = preprocessing.fit(normalised, "sequence+scale")
    levels = preprocessing.transform_inputs(refit, normalised)[:, :6, 2:]
    assert np.abs(levels).max() < 1e-5
    # Saved and read back, the model directory's preprocessing scales the same way.
    again = preprocessing.Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict())))
    np.testing.assert_array_equal(preprocessing.transform_inputs(again, data), out)


def test_values_per_scale_input_are_added_to_their_features():
    prep = preprocessing.Preprocessing(
        ("a", "b"),
        "str",
        (0.0, 0.0),
        (1.0, 1.0),
        None,
        "npz",
        "sequence+scale",
        log_scale_mean=(0.0, 0.0),
        log_scale_std=(1.0, 1.0),
        categorical=("event",),
    )
    values = np.arange(2 * 3 * 5, dtype=float).reshape(2, 3, 5)  # 2 numbers, 2 scales, 1 id
    folded = preprocessing.per_feature(prep, values)
    np.testing.assert_array_equal(folded[..., 0], values[..., 0] + values[..., 2])
    np.testing.assert_array_equal(folded[..., 1], values[..., 1] + values[..., 3])
    np.testing.assert_array_equal(folded[..., 2], values[..., 4])
    assert folded.sum() == values.sum()  # attributions still add up


@pytest.mark.parametrize(("spread", "expected"), [(30.0, "feature"), (1000.0, "sequence+scale")])
def test_auto_normalisation_scales_per_sequence_only_when_amplitudes_span_decades(spread, expected):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 40, size=60)
    amplitude = np.geomspace(1.0, spread, 60)  # the 90th/10th percentile ratio is below spread
    inputs = rng.normal(size=(60, 40, 2)) * amplitude[:, None, None] ** np.array([0.0, 1.0])
    steps = np.arange(40)[None, :, None] < lengths[:, None, None]
    inputs = np.where(steps, inputs, 0.0)
    labels = np.array(["a", "b"] * 30)
    prep = preprocessing.fit(_data(inputs, lengths, labels))
    # What the spread of the second feature's amplitudes calls for, saved as chosen;
    # read in blocks of three sequences (data kept on disk), the choice is the same.
    stds = inputs[:, :, 1].std(axis=1, where=steps[:, :, 0])
    low, high = np.percentile(stds, [10, 90])
    assert (high > preprocessing.SEQUENCE_SCALE_SPREAD * low) == (expected != "feature")
    assert prep.normalize == expected
    stds = preprocessing.sequence_stds(_data(inputs, lengths, labels), rows=3)
    assert preprocessing.normalization_for(stds) == expected


def test_auto_normalisation_leaves_constant_sequences_out_of_the_spread():
    # An idle sensor half the time: zero amplitude is not a tiny one.
    rng = np.random.default_rng(1)
    inputs = np.where(np.arange(40)[:, None, None] < 20, 3.0, rng.normal(size=(40, 16, 1)))
    labels = np.array(["idle", "busy"]).repeat(20)
    assert preprocessing.fit(_data(inputs, [16] * 40, labels)).normalize == "feature"


def test_auto_patch_keeps_the_recurrence_short():
    from rnnfc_cli.api import auto_patch

    assert auto_patch(np.array([24, 24])) == 1
    assert auto_patch(np.array([150] * 3)) == 8
    assert auto_patch(np.array([1460])) == 16
    assert all(np.median(n) / auto_patch(np.array([n])) <= 32 for n in (10, 100, 500))


def test_auto_block_pool_pools_between_blocks_only_for_long_series():
    from rnnfc_cli.api import LONG_SERIES_STEPS, auto_block_pool

    assert auto_block_pool(np.array([400, 500, LONG_SERIES_STEPS])) == 1
    assert auto_block_pool(np.array([100, 300, LONG_SERIES_STEPS + 1])) == 2  # one is enough


def test_auto_downsample_brings_the_recurrence_to_at_most_32_steps():
    from rnnfc_cli.api import MAX_AUTO_DOWNSAMPLE, auto_downsample

    assert auto_downsample(np.array([24, 24])) == 1
    assert auto_downsample(np.array([427] * 3)) == 16  # OSULeaf: 27 recurrent steps
    assert auto_downsample(np.array([1500])) == 64  # 24 steps, not 94
    for n in (10, 100, 500, 1000, 2000):
        size = auto_downsample(np.array([n]))
        assert n / size <= 32 and (size == 1 or n / (size // 2) > 32)  # the smallest
    assert auto_downsample(np.array([10**6])) == MAX_AUTO_DOWNSAMPLE
