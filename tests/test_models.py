"""The classifier: shapes, padding invariance, and the scan equal to a hand loop of the cell."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnfc_cli.config import CELLS, POOLS, ModelConfig
from rnnfc_cli.models import RecurrentLayer, build_model


def _inputs(batch=3, steps=7, features=2, seed=0):
    key = jax.random.key(seed)
    inputs = jax.random.normal(key, (batch, steps, features))
    lengths = jnp.array([steps, 3, 1][:batch], jnp.int32)
    return inputs, lengths


COMBINATIONS = [(cell, pool, 1) for cell, pool in itertools.product(CELLS, POOLS)] + [
    ("lstm", "last", 2),
    ("gru", "mean", 2),
]


@pytest.mark.parametrize(("cell", "pool", "layers"), COMBINATIONS)
def test_extra_padding_never_changes_logits(cell, pool, layers):
    model = build_model(
        ModelConfig(2, 3, cell=cell, hidden=5, layers=layers, dense=(4,), pool=pool)
    )
    inputs, lengths = _inputs()
    params = jax.jit(model.init, static_argnames="train")(
        jax.random.key(1), inputs, lengths, train=False
    )
    apply = jax.jit(model.apply, static_argnames="train")
    logits = apply(params, inputs, lengths, train=False)
    assert logits.shape == (3, 3)
    garbage = jax.random.normal(jax.random.key(2), (3, 5, 2)) * 100
    padded = jnp.concatenate([inputs, garbage], axis=1)
    # Also scribble over the padded part inside the original length.
    valid = jnp.arange(12)[None, :, None] < lengths[:, None, None]
    scribbled = jnp.where(valid, padded, 1e3)
    np.testing.assert_allclose(
        apply(params, scribbled, lengths, train=False), logits, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("cell_type", CELLS)
def test_scan_equals_a_manual_loop_of_the_cell(cell_type):
    cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}
    layer = RecurrentLayer(cell_type, 4)
    inputs, lengths = _inputs(steps=6)
    valid = jnp.arange(6)[None, :] < lengths[:, None]
    variables = layer.init(jax.random.key(0), inputs, valid)
    last, outputs = layer.apply(variables, inputs, valid)
    cell = cells[cell_type](features=4)
    cell_params = {"params": variables["params"]["scan"]["cell"]}
    for b in range(3):
        carry = cell.initialize_carry(jax.random.key(0), (1, 2))
        for t in range(int(lengths[b])):
            carry, out = cell.apply(cell_params, carry, inputs[b : b + 1, t])
            np.testing.assert_allclose(outputs[b, t], out[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(last[b], out[0], rtol=1e-5, atol=1e-6)


def test_parameter_paths_are_stable():
    model = build_model(ModelConfig(2, 3, layers=2, dense=(8, 4)))
    inputs, lengths = _inputs()
    params = model.init(jax.random.key(0), inputs, lengths, train=False)["params"]
    assert sorted(params) == ["dense_0", "dense_1", "logits", "rnn_0", "rnn_1"]
    assert "cell" in params["rnn_0"]["scan"]


def test_dropout_is_active_only_in_training():
    model = build_model(ModelConfig(2, 3, hidden=8, layers=2, dense=(8,), dropout=0.5))
    inputs, lengths = _inputs()
    params = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), inputs, lengths, train=False
    )
    apply = jax.jit(model.apply, static_argnames="train")
    evals = [apply(params, inputs, lengths, train=False) for _ in range(2)]
    np.testing.assert_array_equal(evals[0], evals[1])
    trains = [
        apply(params, inputs, lengths, train=True, rngs={"dropout": jax.random.key(k)})
        for k in range(2)
    ]
    assert not np.allclose(trains[0], trains[1])
