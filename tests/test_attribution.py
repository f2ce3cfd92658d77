"""Integrated gradients: the defining property (completeness) and where they point."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from rnnfc_cli.attribution import attributions, make_attribute_fn
from rnnfc_cli.config import ModelConfig
from rnnfc_cli.inference import init_params, make_proba_fn, member_keys
from rnnfc_cli.models import build_model

MODELS = {
    "bilstm": ModelConfig(3, 2, hidden=8, dense=(8,), dropout=0.0),
    "conv-gru-ensemble": ModelConfig(
        3, 2, cell="gru", hidden=6, dense=(8,), dropout=0.0, conv="4:3,4:3", downsample=2
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_attributions_add_up_to_the_change_in_log_probability(name):
    """Completeness: sum of IG = F(x) - F(baseline), F = log p(target)."""
    config = MODELS[name]
    model = build_model(config)
    members = 2 if "ensemble" in name else 1
    params = init_params(model, member_keys(0, members))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    x[9:] = 0.0  # padding beyond the length
    for target in (0, 1):
        values, change = make_attribute_fn(model, steps=256)(params, jnp.asarray(x), 9, target)
        proba = make_proba_fn(model)(
            params, jnp.asarray(np.stack([np.zeros_like(x), x])), jnp.array([9, 9])
        )
        expected = np.log(np.asarray(proba).mean(axis=0)[:, target])
        np.testing.assert_allclose(float(change), expected[1] - expected[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(float(values.sum()), float(change), rtol=1e-2, atol=1e-3)
        assert np.all(np.asarray(values)[9:] == 0)  # padding is zero, so it gets nothing


def test_the_steps_that_decide_get_the_attribution():
    """A model that learned one step's sign decides the class puts its weight there."""
    from rnnfc_cli.callbacks import Callback
    from rnnfc_cli.config import TrainConfig
    from rnnfc_cli.train import ArraySet, fit

    rng = np.random.default_rng(1)
    n, steps = 128, 10
    inputs = rng.normal(0, 0.3, size=(n, steps, 1)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    inputs[:, 4, 0] = np.where(labels == 1, 2.0, -2.0)  # only step 4 carries the class
    data = ArraySet(inputs, np.full(n, steps, np.int32), labels.astype(np.int32))
    model = build_model(ModelConfig(1, 2, hidden=8, dense=(8,), dropout=0.0))
    result = fit(
        model,
        TrainConfig(epochs=30, batch_size=32, lr=1e-2, min_steps=0, patience=100),
        data,
        data,
        Callback(),
    )
    assert result.best_val_accuracy >= 0.95
    values = attributions(model, result.params, inputs[:8], data.lengths[:8], labels[:8])
    per_step = np.abs(np.stack(values)[:, :, 0])
    assert (per_step.argmax(axis=1) == 4).all(), per_step.round(3)
