"""The classifier: shapes, padding invariance, and the scan equal to a hand loop of the cell."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnfc_cli.config import CELLS, POOLS, PRECISIONS, ModelConfig, TrainConfig, front_end_pools
from rnnfc_cli.models import (
    STATISTICS,
    RecurrentLayer,
    build_model,
    mean_pool_steps,
    patch_steps,
    reverse_valid,
)
from rnnfc_cli.train import (
    Batch,
    create_train_state,
    init_params,
    make_ensemble_step,
    make_proba_fn,
    member_keys,
)


def _inputs(batch=3, steps=7, features=2, seed=0):
    key = jax.random.key(seed)
    inputs = jax.random.normal(key, (batch, steps, features))
    lengths = jnp.array([steps, 3, 1][:batch], jnp.int32)
    return inputs, lengths


# Every value of every option in 4 models; the (pool, direction) pairs not here are in
# tests/test_reference.py, whose padding holds garbage too.
COMBINATIONS = [
    dict(
        cell=CELLS[i % 3],
        pool=pool,
        bidirectional=bidirectional,
        layers=2 if i == 1 else 1,  # stacked with layer norm: tests/test_reference.py
        layer_norm=i % 3 == 0,
        patch=1 if i % 2 else 3,
        precision=PRECISIONS[i == 2],  # bf16 compiles slowly: one model here, cells below
    )
    for i, (pool, bidirectional) in enumerate(zip(POOLS, (False, True, False, True), strict=True))
] + [
    dict(
        cell="lstm",
        pool="last,max,attention",
        bidirectional=True,
        layers=1,
        layer_norm=False,
        patch=1,
    ),
    # The conv front end: downsampled with the skip path (in stages: by 2 between the
    # blocks, 3 after), patched without it, and alone (stacked blocks: here without
    # recurrent layers, and in tests/test_reference.py).
    dict(
        cell="gru", pool="last,max", bidirectional=True, conv="6:4,3:3", downsample=6, block_pool=2
    ),
    dict(cell="rnn", pool="mean", patch=2, conv="4:3", downsample=1, skip=False),
    dict(cell="lstm", layers=0, conv="5:2,4:3", downsample=4),
]


@pytest.mark.parametrize("options", COMBINATIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_every_option_trains_a_step_and_ignores_padding(options):
    model = build_model(ModelConfig(2, 3, hidden=5, dense=(4,), **options))
    inputs, _ = _inputs(steps=12)
    lengths = jnp.array([9, 3, 1], jnp.int32)
    # Same shape, different contents past each length: one compile checks the masking.
    valid = jnp.arange(12)[None, :, None] < lengths[:, None, None]
    scribbled = jnp.where(valid, inputs, 1e3 * jax.random.normal(jax.random.key(2), inputs.shape))
    state = create_train_state(model, TrainConfig(warmup_steps=0), total_steps=2)
    before = jax.device_get(state.params)
    proba_fn = make_proba_fn(model)
    np.testing.assert_allclose(
        proba_fn(state.params, scribbled, lengths),
        proba_fn(state.params, inputs, lengths),
        rtol=1e-5,
        atol=1e-6,
    )
    batch = Batch(inputs, lengths, jnp.array([0, 1, 2]), jnp.ones(3))
    step = make_ensemble_step(np.ones(3, np.float32), 0.1)
    state, metrics = step(state, batch, member_keys(0, 1))
    assert np.isfinite(metrics.loss_sum).all()
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, jax.device_get(state.params))
    assert all(jax.tree.leaves(moved)), moved


def test_batch_statistics_count_valid_steps_of_real_rows_only():
    """In training, the conv front end normalises with statistics of the batch's valid
    steps: what padding holds, how long it is, and padding rows (weight 0) change
    neither the logits of the real rows nor the running statistics it sows."""
    # Pooled by 2 between the blocks: the second counts the pooled valid steps.
    config = ModelConfig(
        2, 3, layers=0, dense=(), dropout=0.0, conv="3:1,4:3", downsample=2, block_pool=2
    )
    model = build_model(config)
    inputs, lengths = _inputs(steps=9)
    params = jax.tree.map(lambda p: p[0], init_params(model, member_keys(0, 1)))

    @jax.jit
    def train_apply(x, steps_lengths, weights):
        return model.apply(
            {"params": params},
            x,
            steps_lengths,
            train=True,
            row_weights=weights,
            mutable=[STATISTICS],
        )

    logits, sown = train_apply(inputs, lengths, jnp.ones(3))
    valid = jnp.arange(9)[None, :, None] < lengths[:, None, None]
    scribbled = jnp.where(valid, inputs, 50.0)
    longer = jnp.concatenate([scribbled, jnp.full((3, 4, 2), -9.0)], axis=1)
    padded_rows = jnp.concatenate([longer, jnp.full((2, 13, 2), 3.0)])
    other_logits, other_sown = train_apply(
        padded_rows, jnp.concatenate([lengths, jnp.array([13, 5])]), jnp.array([1.0, 1, 1, 0, 0])
    )
    np.testing.assert_allclose(other_logits[:3], logits, rtol=1e-5, atol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), other_sown, sown
    )
    # The first block is a pointwise product (kernel 1, no bias): its statistics are the
    # valid steps' moments of inputs @ kernel, folded into the running ones by momentum.
    kernel = np.asarray(params["conv_0"]["kernel"][0])
    steps = np.asarray(inputs)[np.asarray(valid[..., 0])] @ kernel
    statistics = sown[STATISTICS]["conv_norm_0"]
    np.testing.assert_allclose(statistics["mean"], 0.1 * steps.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        statistics["var"], 0.9 + 0.1 * steps.var(axis=0), rtol=1e-4, atol=1e-6
    )


def test_the_train_step_puts_the_running_statistics_in_the_parameters():
    model = build_model(ModelConfig(2, 3, hidden=4, dense=(), conv="3:2"))
    state = create_train_state(model, TrainConfig(), total_steps=2)
    inputs, lengths = _inputs()
    batch = Batch(inputs, lengths, jnp.array([0, 1, 2]), jnp.ones(3))
    _, sown = jax.jit(
        lambda params: model.apply(
            {"params": params},
            inputs,
            lengths,
            train=True,
            row_weights=batch.weights,
            rngs={"dropout": jax.random.key(0)},
            mutable=[STATISTICS],
        )
    )(jax.tree.map(lambda p: p[0], state.params))
    state, _ = make_ensemble_step(np.ones(3, np.float32), 0.0)(state, batch, member_keys(0, 1))
    for name in ("mean", "var"):
        np.testing.assert_allclose(
            state.params["conv_norm_0"][name][0], sown[STATISTICS]["conv_norm_0"][name], rtol=1e-6
        )


def test_longer_padding_never_changes_logits():
    config = ModelConfig(
        2,
        3,
        hidden=5,
        dense=(4,),
        bidirectional=True,
        pool="attention",
        layer_norm=True,
        patch=3,
        layers=2,
    )
    model = build_model(config)
    inputs, lengths = _inputs()
    params = jax.tree.map(lambda p: p[0], init_params(model, member_keys(1, 1)))
    apply = jax.jit(lambda x: model.apply({"params": params}, x, lengths, train=False))
    logits = apply(inputs)
    longer = jnp.concatenate([inputs, jnp.full((3, 5, 2), 7.0)], axis=1)
    np.testing.assert_allclose(apply(longer), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hidden", [6, 8])
def test_max_pooling_after_layer_norm_has_finite_gradients(hidden):
    """Jitted, a max over time after a layer norm once gave NaN gradients for state widths
    that are not a power of two (``--layer-norm`` diverged at its second step)."""
    config = ModelConfig(2, 2, hidden=hidden, dense=(4,), layer_norm=True, pool="max")
    model = build_model(config)
    inputs, lengths = _inputs(steps=9)
    params = jax.tree.map(lambda p: p[0], init_params(model, member_keys(0, 1)))

    def loss(p):
        logits = model.apply({"params": p}, inputs, lengths, train=False)
        return jax.nn.log_softmax(logits)[:, 0].sum()

    grads = jax.jit(jax.grad(loss))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_reverse_valid_reverses_only_the_valid_part_and_is_an_involution():
    x = jnp.arange(12.0).reshape(2, 6)
    lengths = jnp.array([4, 6])
    out = reverse_valid(x, lengths)
    np.testing.assert_array_equal(out, [[3, 2, 1, 0, 4, 5], [11, 10, 9, 8, 7, 6]])
    np.testing.assert_array_equal(reverse_valid(out, lengths), x)


@given(
    downsample=st.integers(1, 64),
    block_pool=st.integers(1, 8),
    blocks=st.integers(1, 4),
    length=st.integers(1, 300),
)
def test_pooling_in_stages_pools_by_downsample_in_all(downsample, block_pool, blocks, length):
    pools = front_end_pools(downsample, block_pool, blocks)
    assert len(pools) == blocks and math.prod(pools) == downsample
    assert all(pool in (1, block_pool) for pool in pools[:-1])
    staged = length
    for pool in pools:  # each stage rounds up, as max_pool_steps does
        staged = -(-staged // pool)
    assert staged == -(-length // downsample)  # the recurrent steps of pooling at once


def test_patch_steps_folds_runs_and_zeroes_padding():
    x = jnp.arange(1.0, 8.0).reshape(1, 7, 1)
    patched, lengths = patch_steps(x, jnp.array([5]), 3)
    np.testing.assert_array_equal(patched[0], [[1, 2, 3], [4, 5, 0], [0, 0, 0]])
    assert lengths.tolist() == [2]


def test_mean_pool_steps_averages_valid_steps_only():
    x = jnp.array([[1.0, 2, 3, 4, 5, 0, 0]])[..., None]  # zero past the end, as it arrives
    pooled, lengths = mean_pool_steps(x, jnp.array([5]), 3)
    np.testing.assert_allclose(pooled[0, :, 0], [2.0, 4.5, 0.0])  # not (4 + 5 + 0) / 3
    assert lengths.tolist() == [2]


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
    # Flax's own cell holds exactly these parameters: saved models of either kind load.
    flax_params = jax.eval_shape(
        lambda: cell.init(
            jax.random.key(0), cell.initialize_carry(jax.random.key(0), (1, 2)), inputs[:1, 0]
        )
    )["params"]
    assert jax.tree.map(lambda a: a.shape, cell_params["params"]) == jax.tree.map(
        lambda a: a.shape, flax_params
    )
    for b in range(3):
        carry = cell.initialize_carry(jax.random.key(0), (1, 2))
        for t in range(int(lengths[b])):
            carry, out = cell.apply(cell_params, carry, inputs[b : b + 1, t])
            np.testing.assert_allclose(outputs[b, t], out[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(last[b], out[0], rtol=1e-5, atol=1e-6)


def test_parameter_paths_are_stable():
    model = build_model(ModelConfig(2, 3, layers=2, dense=(8, 4), bidirectional=False))
    inputs, lengths = _inputs()
    params = model.init(jax.random.key(0), inputs, lengths, train=False)["params"]
    assert sorted(params) == ["dense_0", "dense_1", "logits", "rnn_0", "rnn_1"]
    bidirectional = build_model(ModelConfig(2, 3, bidirectional=True, pool="attention", patch=2))
    names = jax.eval_shape(
        lambda: bidirectional.init(jax.random.key(0), inputs, lengths, train=False)
    )["params"]
    assert sorted(names) == [
        "attention_hidden",
        "attention_score",
        "dense_0",
        "logits",
        "patch_projection",
        "rnn_0",
        "rnn_0_backward",
    ]
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


@pytest.mark.parametrize(
    "cell", [pytest.param(c, marks=pytest.mark.xla_default) if c == "lstm" else c for c in CELLS]
)
def test_bf16_keeps_float32_parameters_and_stays_close_to_float32(cell):
    options = dict(cell=cell, hidden=16, dense=(8,), bidirectional=True, pool="last,max")
    full = build_model(ModelConfig(2, 3, **options))
    half = build_model(ModelConfig(2, 3, precision="bf16", **options))
    params = init_params(full, member_keys(0, 1))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    inputs, lengths = _inputs(steps=20)
    exact = make_proba_fn(full)(params, inputs, lengths)
    approx = make_proba_fn(half)(params, inputs, lengths)
    assert approx.dtype == jnp.float32
    np.testing.assert_allclose(approx, exact, atol=2e-2)  # bf16 keeps ~3 significant digits
    assert not np.array_equal(approx, exact)  # the products really ran in bf16
