"""Which time steps drove a prediction: integrated gradients on the model's own inputs.

Integrated gradients (Sundararajan, Taly and Yan, 2017) attribute a score ``F`` to each
input value: ``(x - x') * mean over a of dF/dx at x' + a (x - x')``, for ``a`` along the
straight path from a baseline ``x'`` to the input. The attributions add up to
``F(x) - F(x')`` (completeness), so they say how much of the prediction each step's values
account for. Here ``F`` is the log of the model's probability of one class (the ensemble's
average), the inputs are the scaled ones the model reads, and the baseline is zero: the
training mean under per-feature scaling, the sequence's own mean under per-sequence
scaling (and for its scale inputs, the training sequences' average log scale; what they
get is added to their features' by ``preprocessing.per_feature``), and what padding
holds. Gradients come from ``jax.grad`` through the whole model (convolutions, the
recurrent scan, pooling), evaluated at the midpoints of ``steps`` equal pieces of the
path.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnfc_cli.models import SequenceClassifier

# Midpoints along the path: completeness then holds to about 1e-3 of the score's change on
# the models tested (tests/test_attribution.py); more only sharpens what the eye can't see.
PATH_STEPS = 32


def _log_proba(
    model: SequenceClassifier, params: Any, inputs: jax.Array, lengths: jax.Array, target
) -> jax.Array:
    """float32[batch]: the log of the ensemble's averaged probability of ``target``, the
    ``F`` that both attributions explain."""

    def member(p):
        return jax.nn.softmax(model.apply({"params": p}, inputs, lengths, train=False))

    proba = jax.vmap(member)(params).mean(axis=0)  # [batch, classes]
    return jnp.log(proba[:, target])


def make_attribute_fn(model: SequenceClassifier, steps: int = PATH_STEPS):
    """A compiled ``(stacked params, x float32[time, features], length, target) ->
    (attributions float32[time, features], F(x) - F(0))`` for one sequence."""
    log_proba = functools.partial(_log_proba, model)
    numeric = model.num_features - len(model.embeddings)

    def along(alpha: jax.Array, x: jax.Array) -> jax.Array:
        """The point ``alpha`` of the path: the numeric features scaled, the token ids
        (the last features) as they are: an id between two ids means nothing, so tokens
        stay in the baseline and get no attribution."""
        return jnp.concatenate([alpha * x[..., :numeric], x[..., numeric:]], axis=-1)

    @jax.jit
    def attribute(params, x, length, target):
        alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps
        path = jax.vmap(along, in_axes=(0, None))(alphas, x)
        lengths = jnp.full((steps,), length, jnp.int32)
        # Each point of the path is its own row, so one gradient of the sum gives them all.
        grads = jax.grad(lambda p: log_proba(params, p, lengths, target).sum())(path)
        ends = jnp.stack([along(jnp.zeros((), x.dtype), x), x])
        change = jnp.diff(log_proba(params, ends, jnp.full((2,), length, jnp.int32), target))
        attributed = x * grads.mean(axis=0)
        return attributed.at[..., numeric:].set(0.0), change[0]

    return attribute


def attributions(
    model: SequenceClassifier,
    params: Any,
    inputs: np.ndarray,
    lengths: np.ndarray,
    targets: np.ndarray,
) -> list[np.ndarray]:
    """Integrated gradients of each sequence toward its ``targets`` class:
    float32[length, features] per sequence, its valid steps only."""
    attribute = make_attribute_fn(model)
    occlude = make_occlusion_fn(model) if model.embeddings else None
    out = []
    for x, length, target in zip(inputs, lengths, targets, strict=True):
        x = jnp.asarray(x, jnp.float32)
        values, _ = attribute(params, x, int(length), int(target))
        values = np.array(values)
        if occlude is not None:
            tokens = len(model.embeddings)
            values[:, -tokens:] = np.asarray(occlude(params, x, int(length), int(target)))
        out.append(values[: int(length)])
    return out


def make_occlusion_fn(model: SequenceClassifier):
    """A compiled ``(stacked params, x float32[time, features], length, target) ->
    float32[time, token columns]``: for each step and token column, how much the log
    of the ensemble's probability of ``target`` falls when that token is replaced by the
    unknown token (occlusion, Zeiler and Fergus 2014). Integrated gradients cannot move a
    token id along a path (an id between two ids means nothing), so tokens get this."""
    from rnnfc_cli.preprocessing import UNKNOWN_ID

    tokens = len(model.embeddings)

    @jax.jit
    def occlude(params, x, length, target):
        steps, features = x.shape
        # One variant per (step, column): that token set to unknown; row 0 is x itself.
        # A padded step's variant changes nothing (padding is ignored): 0 there.
        step = jnp.repeat(jnp.arange(steps), tokens)
        column = jnp.tile(jnp.arange(features - tokens, features), steps)
        variants = jnp.broadcast_to(x, (steps * tokens, steps, features))
        variants = variants.at[jnp.arange(steps * tokens), step, column].set(UNKNOWN_ID)
        batch = jnp.concatenate([x[None], variants])
        lengths = jnp.full((batch.shape[0],), length, jnp.int32)
        log_proba = _log_proba(model, params, batch, lengths, target)
        return (log_proba[0] - log_proba[1:]).reshape(steps, tokens)

    return occlude
