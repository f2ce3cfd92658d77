"""The classifier: an optional convolutional front end, a recurrent encoder run with
``nn.scan``, pooled, then a Dense head.

Padded steps never change the result: each convolution sees zeros beyond a sequence's end,
normalisation statistics count valid steps only, the recurrent carry is frozen on padded
steps and pooling only sees valid steps, so a sequence padded to any length gets the same
logits.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnfc_cli.config import ModelConfig, front_end_pools, parse_conv


def valid_mask(lengths: jax.Array, steps: int) -> jax.Array:
    """bool[batch, steps]: True where a step lies inside its sequence."""
    return jnp.arange(steps)[None, :] < lengths[:, None]


PRECISIONS = {"float32": None, "bf16": jnp.bfloat16}

# The collection in which ``MaskedBatchNorm`` sows its updated running statistics during
# training; ``running_statistics`` collects them for the train step.
STATISTICS = "running_statistics"


class MaskedBatchNorm(nn.Module):
    """Batch normalisation over the valid steps of a batch.

    Flax's ``nn.BatchNorm`` keeps its running statistics in a "batch_stats" collection
    that every save, restore, snapshot, ensemble and device path would have to carry
    beside the parameters. Here they are two more leaves ("mean", "var") of the one
    parameter tree: they get no gradient (training normalises with the batch's own
    statistics), and the train step overwrites them with the running averages this
    module sows into ``STATISTICS``. Sums and counts run over valid steps only and,
    given ``axis_name`` (inside ``shard_map``), over every device's share, so the
    statistics are the whole batch's whatever the number of devices.

    Attributes:
      momentum: weight of the old running average in each update.
      epsilon: added to the variance before the square root.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(
        self, x: jax.Array, valid: jax.Array, *, train: bool, axis_name: str | None = None
    ) -> jax.Array:
        """Normalise float32[batch, time, channels] per channel; ``valid``: bool[batch, time]
        marks the steps that count in the statistics."""
        channels = x.shape[-1]
        running_mean = self.param("mean", nn.initializers.zeros, (channels,))
        running_var = self.param("var", nn.initializers.ones, (channels,))
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        if train:
            weight = valid[..., None].astype(x.dtype)
            sums = (
                (weight * x).sum(axis=(0, 1)),
                (weight * x * x).sum(axis=(0, 1)),
                weight.sum(axis=(0, 1)),
            )
            if axis_name is not None:
                sums = jax.lax.psum(sums, axis_name)
            total, squares, count = sums
            count = jnp.maximum(count, 1.0)
            mean = total / count
            var = jnp.maximum(squares / count - mean**2, 0.0)
            for name, running, batch in (("mean", running_mean, mean), ("var", running_var, var)):
                self.sow(
                    STATISTICS,
                    name,
                    self.momentum * running + (1.0 - self.momentum) * jax.lax.stop_gradient(batch),
                    init_fn=lambda: None,
                    reduce_fn=lambda _, new: new,
                )
        else:
            mean, var = running_mean, running_var
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def _windows(x: jax.Array, size: int) -> jax.Array:
    """float32[batch, time, features] -> [batch, ceil(time / size), size, features]: the
    non-overlapping runs of ``size`` steps, the last filled up with zeros."""
    batch, steps, features = x.shape
    windows = -(-steps // size)
    x = jnp.pad(x, ((0, 0), (0, windows * size - steps), (0, 0)))
    return x.reshape(batch, windows, size, features)


def max_pool_steps(x: jax.Array, lengths: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """The maximum of each non-overlapping run of ``size`` steps.

    ``x`` must be zero on padded steps and non-negative elsewhere (ReLU features), so the
    zeros of padding never win over a valid step and the result does not depend on how
    far the padding goes.

    Returns:
      float32[batch, ceil(time / size), features] and the pooled lengths
      ``ceil(lengths / size)``.
    """
    return _windows(x, size).max(axis=2), (lengths + size - 1) // size


def mean_pool_steps(x: jax.Array, lengths: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """The average over the valid steps of each non-overlapping run of ``size`` steps
    (zero where a run has none).

    ``x`` must be zero on padded steps, so the sums count valid steps only and the result
    does not depend on how far the padding goes. Returns as ``max_pool_steps``.
    """
    sums = _windows(x, size).sum(axis=2)
    starts = size * jnp.arange(sums.shape[1])
    counts = jnp.clip(lengths[:, None] - starts[None], 0, size)
    return sums / jnp.maximum(counts, 1)[..., None], (lengths + size - 1) // size


# Flax's cells, by the parameters they hold: their gates (parameter names are "i" or "h"
# plus the gate), whether the input side has biases, and the gates whose recurrent side
# has one. rnnfc's fused steps keep this layout and Flax's initialisers, so models saved
# while rnnfc ran Flax's own cells load unchanged.
_FLAX_LAYOUT = {
    "lstm": (("i", "f", "g", "o"), False, ("i", "f", "g", "o")),  # OptimizedLSTMCell
    "gru": (("r", "z", "n"), True, ("n",)),  # GRUCell
    "rnn": (("",), True, ()),  # SimpleCell: one "gate", parameters "i" and "h"
}


class _GateWeights(nn.Module):
    """One gate's kernel and bias as Flax's ``Dense`` would hold them (a bias of zeros,
    not a parameter, where Flax has none)."""

    inputs: int
    hidden: int
    kernel_init: nn.initializers.Initializer
    use_bias: bool

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", self.kernel_init, (self.inputs, self.hidden))
        if not self.use_bias:
            return kernel, jnp.zeros((self.hidden,), kernel.dtype)
        return kernel, self.param("bias", nn.initializers.zeros, (self.hidden,))


class _CellWeights(nn.Module):
    """A cell's weights in Flax's layout (``_FLAX_LAYOUT``), returned with the gates side
    by side: input kernel [inputs, gates * hidden] and bias, recurrent kernel
    [hidden, gates * hidden] and bias."""

    cell_type: str
    inputs: int
    hidden: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, ...]:
        gates, input_bias, recurrent_biases = _FLAX_LAYOUT[self.cell_type]
        lecun, orthogonal = nn.initializers.lecun_normal(), nn.initializers.orthogonal()
        x_side = [
            _GateWeights(self.inputs, self.hidden, lecun, input_bias, name=f"i{g}")() for g in gates
        ]
        h_side = [
            _GateWeights(
                self.hidden, self.hidden, orthogonal, g in recurrent_biases, name=f"h{g}"
            )()
            for g in gates
        ]
        return tuple(
            jnp.concatenate(part, axis=-1)
            for side in (x_side, h_side)
            for part in zip(*side, strict=True)
        )


class _CellScope(nn.Module):
    """Keeps a cell's parameters at ``rnn_i/scan/cell/...``, their path from when Flax's
    cell ran inside the scan (named "scan"); the fused step's scan is named "steps"."""

    cell_type: str
    inputs: int
    hidden: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, ...]:
        return _CellWeights(self.cell_type, self.inputs, self.hidden, name="cell")()


def _product(x: jax.Array, kernel: jax.Array, dtype: jnp.dtype | None) -> jax.Array:
    """``x @ kernel`` in float32, or from ``dtype`` inputs with a float32 result: XLA:CPU
    runs a bfloat16 product 1.8x faster than float32 that way, and slower with a
    bfloat16 result (what Flax's cells ask for)."""
    if dtype is not None:
        x, kernel = x.astype(dtype), kernel.astype(dtype)
    return jnp.dot(x, kernel, preferred_element_type=jnp.float32)


class _FusedStep(nn.Module):
    """One step of a cell (Flax's equations) from weights built outside the scan, the
    carry left untouched where the step is padding.

    The weights come in as broadcast inputs, so the backward pass accumulates one
    gradient per kernel and step: Flax's cells assemble and split their kernels inside
    the loop (eight per-gate accumulators for the LSTM, six for the GRU), which made
    small batches and per-core devices markedly slower here. The LSTM and the simple
    cell do one product of ``[x, h]`` with the stacked kernel; the GRU one per side, as
    its reset gate multiplies only the recurrent part.

    Attributes:
      cell_type: "lstm", "gru" or "rnn".
      dtype: the products' input type (None: float32); the carry stays float32, so
        the state accumulates at full precision.
    """

    cell_type: str
    dtype: jnp.dtype | None = None

    def __call__(self, carry, x, valid, *weights):
        keep = valid[:, None]
        if self.cell_type == "gru":
            x_kernel, x_bias, h_kernel, h_bias = weights
            xr, xz, xn = jnp.split(_product(x, x_kernel, self.dtype) + x_bias, 3, axis=-1)
            hr, hz, hn = jnp.split(_product(carry, h_kernel, self.dtype) + h_bias, 3, axis=-1)
            r, z = nn.sigmoid(xr + hr), nn.sigmoid(xz + hz)
            new_h = (1.0 - z) * jnp.tanh(xn + r * hn) + z * carry
            return jnp.where(keep, new_h, carry), new_h
        kernel, bias = weights
        h = carry[1] if self.cell_type == "lstm" else carry
        z = _product(jnp.concatenate([x, h], axis=-1), kernel, self.dtype) + bias
        if self.cell_type == "rnn":
            new_h = jnp.tanh(z)
            return jnp.where(keep, new_h, h), new_h
        c = carry[0]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        new_c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
        new_h = nn.sigmoid(o) * jnp.tanh(new_c)
        return (jnp.where(keep, new_c, c), jnp.where(keep, new_h, h)), new_h


class RecurrentLayer(nn.Module):
    """A cell scanned over time.

    Attributes:
      cell_type: "lstm", "gru" or "rnn".
      hidden: state size.
      dtype: matrix-product input type of the cell (None: float32).
    """

    cell_type: str
    hidden: int
    dtype: jnp.dtype | None = None

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
        x_kernel, x_bias, h_kernel, h_bias = _CellScope(
            self.cell_type, inputs.shape[-1], self.hidden, name="scan"
        )()
        if self.cell_type == "gru":
            weights = (x_kernel, x_bias, h_kernel, h_bias)
        else:  # the input and recurrent products summed: one product of [x, h]
            weights = (jnp.concatenate([x_kernel, h_kernel], axis=0), x_bias + h_bias)
        scan = nn.scan(
            _FusedStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=(1, 1) + (nn.broadcast,) * len(weights),
            out_axes=1,
        )
        zeros = jnp.zeros((inputs.shape[0], self.hidden), jnp.float32)
        carry = (zeros, zeros) if self.cell_type == "lstm" else zeros
        carry, outputs = scan(self.cell_type, self.dtype, name="steps")(
            carry, inputs, valid, *weights
        )
        return (carry[1] if self.cell_type == "lstm" else carry), outputs


def reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Reverse each sequence's valid steps in place, leaving its padding where it is.

    Applying it twice gives ``x`` back, so it also maps backward outputs to forward time.

    Args:
      x: [batch, time, ...].
      lengths: int[batch].
    """
    steps = jnp.arange(x.shape[1])[None, :]
    index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def patch_steps(inputs: jax.Array, lengths: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Fold non-overlapping runs of ``size`` steps into one step of ``size`` times the features.

    Padded steps are zeroed first, so the result does not depend on what padding held.

    Args:
      inputs: float32[batch, time, features].
      lengths: int[batch].
      size: steps per patch.

    Returns:
      float32[batch, ceil(time / size), size * features] and the patched lengths
      ``ceil(lengths / size)``.
    """
    batch, steps, features = inputs.shape
    inputs = jnp.where(valid_mask(lengths, steps)[:, :, None], inputs, 0.0)
    padded_steps = -(-steps // size) * size
    inputs = jnp.pad(inputs, ((0, 0), (0, padded_steps - steps), (0, 0)))
    patched = inputs.reshape(batch, padded_steps // size, size * features)
    return patched, (lengths + size - 1) // size


def pool_states(
    last: jax.Array, outputs: jax.Array, valid: jax.Array, pool: str, scores: jax.Array | None
) -> jax.Array:
    """Reduce per-step states to one vector per sequence, over valid steps only.

    Args:
      last: float32[batch, hidden], the state after the last valid step.
      outputs: float32[batch, time, hidden].
      valid: bool[batch, time].
      pool: "last", "mean", "max" or "attention".
      scores: float32[batch, time] attention logits, for ``pool="attention"``.

    Returns:
      float32[batch, hidden].
    """
    mask = valid[:, :, None]
    if pool == "last":
        return last
    if pool == "mean":
        total = jnp.where(mask, outputs, 0.0).sum(axis=1)
        return total / jnp.maximum(valid.sum(axis=1, keepdims=True), 1).astype(outputs.dtype)
    if pool == "max":
        # The value at each feature's argmax, not ``.max()``: jitted on XLA:CPU (jax 0.10),
        # the gradient of a max over time after a layer norm came out NaN for state widths
        # that are not a power of two (6, 12, 24, 48); the gathered value's is finite.
        index = jnp.argmax(jnp.where(mask, outputs, -jnp.inf), axis=1)
        return jnp.take_along_axis(outputs, index[:, None, :], axis=1)[:, 0]
    if pool == "attention":
        weights = jax.nn.softmax(jnp.where(valid, scores, -jnp.inf), axis=1)
        return jnp.einsum("bt,bth->bh", weights, jnp.where(mask, outputs, 0.0))
    raise ValueError(f"unknown pool {pool!r}")


class SequenceClassifier(nn.Module):
    """An optional conv front end, optional patching, a (bi)directional recurrent stack,
    pooling (joined with the conv features' average over valid steps), and a Dense head.

    Attributes mirror ``config.ModelConfig`` one-to-one (see there), which alone holds
    their defaults: build it with ``build_model``.
    """

    num_features: int
    num_classes: int
    cell: str
    hidden: int
    layers: int
    bidirectional: bool
    pool: str
    dense: Sequence[int]
    dropout: float
    layer_norm: bool
    patch: int
    precision: str
    conv: str
    downsample: int
    skip: bool
    branch_dropout: float
    block_pool: int = 1
    block_pooling: str = "mean"
    embeddings: Sequence[tuple[int, int]] = ()

    def setup(self):
        dtype = PRECISIONS[self.precision]
        dense = functools.partial(nn.Dense, dtype=dtype)
        blocks = parse_conv(self.conv)
        self.convolutions = [
            nn.Conv(
                channels, (kernel,), padding="SAME", use_bias=False, dtype=dtype, name=f"conv_{i}"
            )
            for i, (channels, kernel) in enumerate(blocks)
        ]
        self.conv_norms = [MaskedBatchNorm(name=f"conv_norm_{i}") for i in range(len(blocks))]
        self.embed = [
            nn.Embed(ids, size, name=f"embed_{i}") for i, (ids, size) in enumerate(self.embeddings)
        ]
        if self.patch > 1:
            self.patch_projection = dense(self.hidden, name="patch_projection")
        self.forward = [
            RecurrentLayer(self.cell, self.hidden, dtype, name=f"rnn_{i}")
            for i in range(self.layers)
        ]
        if self.bidirectional:
            self.backward = [
                RecurrentLayer(self.cell, self.hidden, dtype, name=f"rnn_{i}_backward")
                for i in range(self.layers)
            ]
        if self.layer_norm:
            self.norms = [nn.LayerNorm(name=f"layer_norm_{i}") for i in range(self.layers)]
        if "attention" in self.pool.split(","):
            self.attention_hidden = dense(self.hidden, name="attention_hidden")
            # No bias: softmax over time ignores a shared shift.
            self.attention_score = dense(1, use_bias=False, name="attention_score")
        self.head = [dense(size, name=f"dense_{i}") for i, size in enumerate(self.dense)]
        self.logits = dense(self.num_classes, name="logits")
        self.drop = nn.Dropout(self.dropout)
        # One draw per example for the whole vector: the recurrent summary is dropped whole.
        self.branch_drop = nn.Dropout(self.branch_dropout, broadcast_dims=(1,))

    def __call__(
        self,
        inputs: jax.Array,
        lengths: jax.Array,
        *,
        train: bool,
        row_weights: jax.Array | None = None,
        axis_name: str | None = None,
    ) -> jax.Array:
        """Class scores.

        Args:
          inputs: float32[batch, time, features], any values on padded steps.
          lengths: int32[batch], valid steps of each sequence (>= 1).
          train: enables dropout (needs a "dropout" rng) and batch statistics in the
            conv front end (sown into ``STATISTICS``, which must be mutable).
          row_weights: float32[batch]; rows of weight 0 (a batch's padding) are left out
            of the batch statistics.
          axis_name: the device axis when called per device inside ``shard_map``, so
            batch statistics cover the whole batch.

        Returns:
          float32[batch, num_classes] logits. With ``precision="bf16"`` every matrix
          product takes bfloat16 inputs (parameters, states and sums stay float32).
        """
        x = self._embedded(inputs)
        # Token models: the embeddings' average over valid steps goes to the head too (a
        # bag of tokens, what fastText classifies by), so that what counting decides need
        # not be learned through the convolutions and the recurrence.
        joined = []
        if self.embed and self.skip:
            valid = valid_mask(lengths, x.shape[1])
            joined.append(pool_states(x[:, -1], x, valid, "mean", None))
        if self.convolutions:
            x, conv, lengths = self._front_end(x, lengths, train, row_weights, axis_name)
            joined = joined + conv
        if not self.layers:
            return self._head(jnp.concatenate(joined, axis=-1), train)
        if self.patch > 1:
            x, lengths = patch_steps(x, lengths, self.patch)
            x = self.patch_projection(x).astype(jnp.float32)
        valid = valid_mask(lengths, x.shape[1])
        for depth in range(self.layers):
            if depth:
                x = self.drop(x, deterministic=not train)
            last, outputs = self.forward[depth](x, valid)
            if self.bidirectional:
                back_last, back = self.backward[depth](reverse_valid(x, lengths), valid)
                last = jnp.concatenate([last, back_last], axis=-1)
                outputs = jnp.concatenate([outputs, reverse_valid(back, lengths)], axis=-1)
            if self.layer_norm:
                outputs = self.norms[depth](outputs)
                last = self.norms[depth](last)
            x = outputs
        methods = self.pool.split(",")
        scores = None
        if "attention" in methods:
            scores = self.attention_score(nn.tanh(self.attention_hidden(x)))[..., 0]
            scores = scores.astype(jnp.float32)
        h = jnp.concatenate([pool_states(last, x, valid, m, scores) for m in methods], axis=-1)
        if joined:
            h = jnp.concatenate([self.branch_drop(h, deterministic=not train), *joined], axis=-1)
        return self._head(h, train)

    def _embedded(self, inputs: jax.Array) -> jax.Array:
        """The inputs with each token-id feature (the last ``len(embeddings)``) replaced by
        its learned vector: float32[batch, time, numeric + embedding sizes]."""
        if not self.embed:
            return inputs
        numeric = inputs.shape[-1] - len(self.embed)
        # Clipped as floats: padded steps may hold anything (NaN too), and an id out of
        # range would gather NaN.
        ids = jnp.nan_to_num(jnp.asarray(inputs[..., numeric:]), nan=0.0)
        vectors = [
            embed(jnp.clip(ids[..., i], 0, embed.num_embeddings - 1).astype(jnp.int32))
            for i, embed in enumerate(self.embed)
        ]
        return jnp.concatenate([inputs[..., :numeric], *vectors], axis=-1)

    def _front_end(self, x, lengths, train, row_weights, axis_name):
        """Conv blocks (conv, masked batch norm, ReLU) over the valid steps, pooled in
        stages (``front_end_pools``: between blocks as ``block_pooling`` says, the
        maximum after the last); returns the features for the recurrent layers
        (pooled by ``downsample`` in all), the skip path's [average of the last block's
        features over valid steps] (or []) and the pooled lengths."""
        pools = front_end_pools(self.downsample, self.block_pool, len(self.convolutions))
        last = len(pools) - 1
        joined = []
        for i, (convolution, norm) in enumerate(
            zip(self.convolutions, self.conv_norms, strict=True)
        ):
            valid = valid_mask(lengths, x.shape[1])
            counted = valid if row_weights is None else valid & (row_weights > 0)[:, None]
            x = convolution(jnp.where(valid[..., None], x, 0.0)).astype(jnp.float32)
            x = nn.relu(norm(x, counted, train=train, axis_name=axis_name))
            x = jnp.where(valid[..., None], x, 0.0)
            if i == last and self.skip:
                joined.append(pool_states(x[:, -1], x, valid, "mean", None))
            if pools[i] > 1:
                between = i < last and self.block_pooling == "mean"
                x, lengths = (mean_pool_steps if between else max_pool_steps)(x, lengths, pools[i])
        return x, joined, lengths

    def _head(self, h: jax.Array, train: bool) -> jax.Array:
        for layer in self.head:
            h = self.drop(nn.relu(layer(h)), deterministic=not train)
        return self.logits(h).astype(jnp.float32)


def build_model(config: ModelConfig) -> SequenceClassifier:
    """The module a saved ``ModelConfig`` describes."""
    return SequenceClassifier(**dataclasses.asdict(config))
