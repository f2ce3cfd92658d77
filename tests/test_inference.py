"""Prediction's batches: padded to a few compiled sizes, without changing a probability."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_MODEL

from rnnfc_cli.config import ModelConfig
from rnnfc_cli.inference import (
    compiled_rows,
    compiled_steps,
    init_params,
    make_proba_fn,
    member_keys,
    member_proba,
)
from rnnfc_cli.models import build_model


@pytest.mark.parametrize("steps", [1, 7, 8, 9, 63, 64, 65, 70, 129, 251, 1000, 1460, 5000])
def test_compiled_steps_round_up_by_at_most_an_eighth_past_the_smallest_grain(steps):
    padded = compiled_steps(steps)
    assert padded >= steps and compiled_steps(padded) == padded
    assert padded - steps < max(8, steps / 8)


@pytest.mark.parametrize("n", [1, 3, 8, 9, 100, 128, 129, 256, 257, 10_000])
def test_compiled_rows_are_a_power_of_two_of_at_least_eight_up_to_the_batch(n):
    rows = compiled_rows(n, 256)
    assert rows == 256 or (rows >= n and rows & (rows - 1) == 0 and rows >= 8)
    assert rows < 2 * max(n, 8)


def test_nearby_sizes_share_one_compiled_program_and_padding_changes_nothing():
    model = build_model(ModelConfig(2, 3, conv="4:3", **TINY_MODEL))
    params = init_params(model, member_keys(0, 1))
    proba_fn = make_proba_fn(model)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(101, 71, 2)).astype(np.float32)
    lengths = rng.integers(1, 72, size=101).astype(np.int32)
    lengths[0] = 71

    all_of_them = member_proba(proba_fn, params, inputs, lengths)
    compiled = proba_fn._cache_size()  # one function per model, for the whole process
    fewer = member_proba(proba_fn, params, inputs[:100, :70], np.minimum(lengths[:100], 70))
    assert proba_fn._cache_size() == compiled
    shorter = lengths[:100] <= 70  # the same sequences, one step less of padding
    np.testing.assert_allclose(
        fewer[:, shorter], all_of_them[:, :100][:, shorter], rtol=1e-5, atol=1e-6
    )
    # Each sequence alone, unpadded, gets the same probabilities.
    for i in (0, 1, 2):
        alone = proba_fn(params, inputs[i : i + 1, : lengths[i]], lengths[i : i + 1])
        np.testing.assert_allclose(all_of_them[:, i], np.asarray(alone)[:, 0], atol=1e-5)
