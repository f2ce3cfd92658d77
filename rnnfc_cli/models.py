"""The classifier: a recurrent encoder run with ``nn.scan``, pooled, then a Dense head.

Padded steps never change the result: the recurrent carry is frozen on them and pooling
only sees valid steps, so a sequence padded to any length gets the same logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnfc_cli.config import ModelConfig

_CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}


def valid_mask(lengths: jax.Array, steps: int) -> jax.Array:
    """bool[batch, steps]: True where a step lies inside its sequence."""
    return jnp.arange(steps)[None, :] < lengths[:, None]


class _MaskedStep(nn.Module):
    """One cell step that leaves the carry untouched where the step is padding.

    Attributes:
      cell_type: key of ``_CELLS``.
      hidden: state size.
    """

    cell_type: str
    hidden: int

    @nn.compact
    def __call__(self, carry, inputs):
        x, valid = inputs
        new_carry, output = _CELLS[self.cell_type](features=self.hidden, name="cell")(carry, x)
        carry = jax.tree.map(lambda new, old: jnp.where(valid[:, None], new, old), new_carry, carry)
        return carry, output


class RecurrentLayer(nn.Module):
    """A cell scanned over time.

    Attributes:
      cell_type: "lstm", "gru" or "rnn".
      hidden: state size.
    """

    cell_type: str
    hidden: int

    @nn.compact
    def __call__(self, inputs: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Run the cell over every step.

        Args:
          inputs: float32[batch, time, features].
          valid: bool[batch, time].

        Returns:
          The hidden state after each sequence's last valid step, float32[batch, hidden],
          and the per-step outputs, float32[batch, time, hidden] (garbage on padded steps).
        """
        batch = inputs.shape[0]
        zeros = jnp.zeros((batch, self.hidden), inputs.dtype)
        carry = (zeros, zeros) if self.cell_type == "lstm" else zeros
        scan = nn.scan(
            _MaskedStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )
        carry, outputs = scan(self.cell_type, self.hidden, name="scan")(carry, (inputs, valid))
        last = carry[1] if self.cell_type == "lstm" else carry
        return last, outputs


def pool_states(last: jax.Array, outputs: jax.Array, valid: jax.Array, pool: str) -> jax.Array:
    """Reduce per-step states to one vector per sequence, over valid steps only.

    Args:
      last: float32[batch, hidden], the state after the last valid step.
      outputs: float32[batch, time, hidden].
      valid: bool[batch, time].
      pool: "last", "mean" or "max".

    Returns:
      float32[batch, hidden].
    """
    if pool == "last":
        return last
    mask = valid[:, :, None]
    if pool == "mean":
        total = jnp.where(mask, outputs, 0.0).sum(axis=1)
        return total / jnp.maximum(valid.sum(axis=1, keepdims=True), 1).astype(outputs.dtype)
    if pool == "max":
        return jnp.where(mask, outputs, -jnp.inf).max(axis=1)
    raise ValueError(f"unknown pool {pool!r}")


class SequenceClassifier(nn.Module):
    """Recurrent encoder + Dense head producing class logits.

    Attributes mirror ``config.ModelConfig`` one-to-one (see there).
    """

    num_features: int
    num_classes: int
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    dense: Sequence[int] = (128,)
    dropout: float = 0.1
    pool: str = "last"

    def setup(self):
        self.recurrent = [
            RecurrentLayer(self.cell, self.hidden, name=f"rnn_{i}") for i in range(self.layers)
        ]
        self.head = [nn.Dense(size, name=f"dense_{i}") for i, size in enumerate(self.dense)]
        self.logits = nn.Dense(self.num_classes, name="logits")
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, inputs: jax.Array, lengths: jax.Array, *, train: bool) -> jax.Array:
        """Class scores.

        Args:
          inputs: float32[batch, time, features], any values on padded steps.
          lengths: int32[batch], valid steps of each sequence (>= 1).
          train: enables dropout (needs a "dropout" rng).

        Returns:
          float32[batch, num_classes] logits.
        """
        valid = valid_mask(lengths, inputs.shape[1])
        x = inputs
        for depth, layer in enumerate(self.recurrent):
            if depth:
                x = self.drop(x, deterministic=not train)
            last, x = layer(x, valid)
        h = pool_states(last, x, valid, self.pool)
        for layer in self.head:
            h = self.drop(nn.relu(layer(h)), deterministic=not train)
        return self.logits(h)


def build_model(config: ModelConfig) -> SequenceClassifier:
    """The module a saved ``ModelConfig`` describes."""
    return SequenceClassifier(**dataclasses.asdict(config))
