"""Training-time augmentation of numeric sequences (``--augment``).

Pure functions of a batch and a PRNG key, run inside the compiled training step on the
device: every step, every ensemble member and every device draws afresh, and nothing is
materialised on the host. They see the inputs after scaling (unit variance per feature,
or per sequence), so strengths are in those units. Padded steps never reach a valid step:
inputs are zeroed beyond each sequence's end first, crops stay inside the valid steps,
and a mix is as long as the longer of its two sequences. The last ``fixed`` features are
left to crops and mixes (``augmented``): noise or a factor on a token id means nothing,
and a sequence's scale inputs (``--normalize sequence+scale``) are constants by design.

Which augmentation pays depends on the data (``README.md``, "Augmentation"): crops helped
a shape set of 200 sequences and hurt one of 36, mixup helped neither, noise and scaling
hurt the first. So none is on by default.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnfc_cli.config import parse_augment
from rnnfc_cli.models import valid_mask


@dataclasses.dataclass(frozen=True)
class Mix:
    """Mixup's pairing: row i is ``share[i]`` of itself and ``1 - share[i]`` of row
    ``partner[i]``, inputs and targets alike."""

    partner: jax.Array  # int32[batch]
    share: jax.Array  # float32[batch]


def jitter(inputs: jax.Array, key: jax.Array, sigma: float, numeric: int) -> jax.Array:
    """Gaussian noise of standard deviation ``sigma`` on the first ``numeric`` features."""
    noise = sigma * jax.random.normal(key, (*inputs.shape[:2], numeric), inputs.dtype)
    return inputs.at[..., :numeric].add(noise)


def scale(inputs: jax.Array, key: jax.Array, sigma: float, numeric: int) -> jax.Array:
    """Each sequence's numeric features multiplied by factors drawn from N(1, sigma²),
    one per sequence and feature (the same at every step)."""
    factors = 1.0 + sigma * jax.random.normal(key, (inputs.shape[0], 1, numeric), inputs.dtype)
    return inputs.at[..., :numeric].multiply(factors)


def crop(
    inputs: jax.Array, lengths: jax.Array, key: jax.Array, ratio: float
) -> tuple[jax.Array, jax.Array]:
    """Window slicing: a random window of ``ceil(ratio * length)`` consecutive valid steps
    of each sequence, moved to the start; the steps after it are padding."""
    kept = jnp.clip(jnp.ceil(ratio * lengths), 1, lengths).astype(lengths.dtype)
    start = jnp.floor(jax.random.uniform(key, lengths.shape) * (lengths - kept + 1))
    start = jnp.minimum(start.astype(lengths.dtype), lengths - kept)
    index = jnp.minimum(start[:, None] + jnp.arange(inputs.shape[1]), inputs.shape[1] - 1)
    return jnp.take_along_axis(inputs, index[..., None], axis=1), kept


def mixup(
    inputs: jax.Array, lengths: jax.Array, weights: jax.Array, key: jax.Array, alpha: float
) -> tuple[jax.Array, jax.Array, Mix]:
    """Each row mixed with a random real row of the batch (never a padding row of weight
    0) with a share drawn from Beta(alpha, alpha); the mix is as long as the longer."""
    partner_key, share_key = jax.random.split(key)
    real = jnp.where(weights > 0, 0.0, -jnp.inf)
    partner = jax.random.categorical(partner_key, real, shape=lengths.shape)
    share = jax.random.beta(share_key, alpha, alpha, lengths.shape).astype(inputs.dtype)
    mixed = share[:, None, None] * inputs + (1.0 - share[:, None, None]) * inputs[partner]
    return mixed, jnp.maximum(lengths, lengths[partner]), Mix(partner, share)


def augmented(
    spec: str,
    inputs: jax.Array,
    lengths: jax.Array,
    weights: jax.Array,
    key: jax.Array,
    fixed: int = 0,
) -> tuple[jax.Array, jax.Array, Mix | None]:
    """The batch after the augmentations of ``spec`` (``config.parse_augment``), in its
    order, and mixup's pairing when it mixed. ``fixed``: the trailing features that noise
    and scaling leave alone (scale inputs, then token ids)."""
    if not spec:
        return inputs, lengths, None
    numeric = inputs.shape[-1] - fixed
    inputs = jnp.where(valid_mask(lengths, inputs.shape[1])[..., None], inputs, 0.0)
    mix = None
    parts = parse_augment(spec)
    for (name, strength), part_key in zip(parts, jax.random.split(key, len(parts)), strict=True):
        if name == "jitter":
            inputs = jitter(inputs, part_key, strength, numeric)
        elif name == "scale":
            inputs = scale(inputs, part_key, strength, numeric)
        elif name == "crop":
            inputs, lengths = crop(inputs, lengths, part_key, strength)
        else:
            inputs, lengths, mix = mixup(inputs, lengths, weights, part_key, strength)
        # Noise must not land on padded steps a later crop or mix would read as valid.
        inputs = jnp.where(valid_mask(lengths, inputs.shape[1])[..., None], inputs, 0.0)
    return inputs, lengths, mix
