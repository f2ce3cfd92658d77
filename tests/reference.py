"""An independent NumPy implementation of a saved model's forward pass: the test oracle.

It reads only the model directory's files (``config.json``, ``preprocessing.json`` and
``params.msgpack``) and computes in float64, step by step in plain loops, from the
equations of each cell as published by Flax (``OptimizedLSTMCell``, ``GRUCell``,
``SimpleCell``), never from rnnfc's own code. Every model change must keep
``predict --proba`` equal to this within rounding, or change this on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import serialization

_LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default
_BATCH_NORM_EPS = 1e-5
_MIN_STD = 1e-8


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _dense(x: np.ndarray, layer: dict) -> np.ndarray:
    out = x @ layer["kernel"]
    return out + layer["bias"] if "bias" in layer else out


def _layer_norm(x: np.ndarray, layer: dict) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LAYER_NORM_EPS) * layer["scale"] + layer["bias"]


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A "SAME" 1-D convolution of float[steps, in] with kernel float[width, in, out], zeros
    standing in for the steps before the first and after the last."""
    width = kernel.shape[0]
    before = (width - 1) // 2
    padded = np.concatenate(
        [np.zeros((before, x.shape[1])), x, np.zeros((width - 1 - before, x.shape[1]))]
    )
    return np.stack([sum(padded[t + j] @ kernel[j] for j in range(width)) for t in range(len(x))])


def _front_end(model: dict, params: dict, x: np.ndarray):
    """Conv blocks with batch norm (running statistics) and ReLU over one sequence's valid
    steps; returns the features for the recurrent layers and the skip path's vector."""
    blocks = [] if model.get("conv", "") in ("", "none") else model["conv"].split(",")
    if not blocks:
        return x, []
    left, block_pool = model["downsample"], model.get("block_pool", 1)
    for i in range(len(blocks)):
        norm = params[f"conv_norm_{i}"]
        x = _convolve(x, params[f"conv_{i}"]["kernel"])
        x = (x - norm["mean"]) / np.sqrt(norm["var"] + _BATCH_NORM_EPS)
        x = np.maximum(x * norm["scale"] + norm["bias"], 0.0)
        if i < len(blocks) - 1 and left % block_pool == 0:
            size, left = block_pool, left // block_pool  # pooled between blocks
        elif i == len(blocks) - 1:
            joined = [x.mean(axis=0)] if model["skip"] else []
            size = left  # the rest of the downsampling
        else:
            size = 1
        if size > 1:
            between = i < len(blocks) - 1 and model.get("block_pooling", "max") == "mean"
            pool = np.mean if between else np.max
            x = np.stack([pool(x[t : t + size], axis=0) for t in range(0, len(x), size)])
    return x, joined


def _cell_step(cell: str, weights: dict, x: np.ndarray, state):
    """One step of Flax's cell for one sequence; returns (new state, output)."""

    def gate(name: str, inputs: np.ndarray, recurrent: np.ndarray) -> np.ndarray:
        return _dense(inputs, weights[f"i{name}"]) + _dense(recurrent, weights[f"h{name}"])

    if cell == "lstm":
        c, h = state
        i = _sigmoid(gate("i", x, h))
        f = _sigmoid(gate("f", x, h))
        g = np.tanh(gate("g", x, h))
        o = _sigmoid(gate("o", x, h))
        c = f * c + i * g
        h = o * np.tanh(c)
        return (c, h), h
    if cell == "gru":
        h = state
        r = _sigmoid(gate("r", x, h))
        z = _sigmoid(gate("z", x, h))
        n = np.tanh(_dense(x, weights["in"]) + r * _dense(h, weights["hn"]))
        h = (1.0 - z) * n + z * h
        return h, h
    h = np.tanh(gate("", x, state))  # SimpleCell
    return h, h


def _run_cell(cell: str, weights: dict, x: np.ndarray, hidden: int):
    """The cell over one sequence's valid steps, float[steps, features] -> last state
    float[hidden] and outputs float[steps, hidden]."""
    zeros = np.zeros(hidden)
    state = (zeros, zeros) if cell == "lstm" else zeros
    outputs = []
    for step in x:
        state, out = _cell_step(cell, weights, step, state)
        outputs.append(out)
    return outputs[-1], np.stack(outputs)


def _scale(prep: dict, x: np.ndarray) -> np.ndarray:
    """One sequence's valid steps, float[steps, features], scaled as the model was trained."""
    if prep["normalize"] in ("sequence", "sequence+scale"):
        centred = x - x.mean(axis=0)
        std = np.maximum(np.sqrt((centred**2).mean(axis=0)), _MIN_STD)
        if prep["normalize"] == "sequence":
            return centred / std
        level = (np.log(std) - np.array(prep["log_scale_mean"])) / np.array(prep["log_scale_std"])
        level = np.clip(level, -5.0, 5.0)
        return np.concatenate([centred / std, np.tile(level, (len(x), 1))], axis=1)
    if prep["normalize"] == "feature":
        return (x - np.array(prep["feature_mean"])) / np.array(prep["feature_std"])
    return x


def _classify(model: dict, params: dict, x: np.ndarray) -> np.ndarray:
    """Class probabilities of one ensemble member for one scaled sequence."""
    x, joined = _front_end(model, params, x)
    if model["layers"] == 0:
        return _head(model, params, np.concatenate(joined))
    patch = model["patch"]
    if patch > 1:
        steps = -(-len(x) // patch) * patch
        x = np.concatenate([x, np.zeros((steps - len(x), x.shape[1]))])
        x = _dense(x.reshape(steps // patch, patch * x.shape[1]), params["patch_projection"])
    hidden = model["hidden"]
    for depth in range(model["layers"]):
        cell_weights = params[f"rnn_{depth}"]["scan"]["cell"]
        last, outputs = _run_cell(model["cell"], cell_weights, x, hidden)
        if model["bidirectional"]:
            back_weights = params[f"rnn_{depth}_backward"]["scan"]["cell"]
            back_last, back = _run_cell(model["cell"], back_weights, x[::-1], hidden)
            last = np.concatenate([last, back_last])
            outputs = np.concatenate([outputs, back[::-1]], axis=1)
        if model["layer_norm"]:
            norm = params[f"layer_norm_{depth}"]
            last, outputs = _layer_norm(last, norm), _layer_norm(outputs, norm)
        x = outputs
    pooled = []
    for method in model["pool"].split(","):
        if method == "last":
            pooled.append(last)
        elif method == "mean":
            pooled.append(x.mean(axis=0))
        elif method == "max":
            pooled.append(x.max(axis=0))
        else:
            hidden_scores = np.tanh(_dense(x, params["attention_hidden"]))
            weights = _softmax(_dense(hidden_scores, params["attention_score"])[:, 0], axis=0)
            pooled.append(weights @ x)
    return _head(model, params, np.concatenate(pooled + joined))


def _head(model: dict, params: dict, h: np.ndarray) -> np.ndarray:
    for i in range(len(model["dense"])):
        h = np.maximum(_dense(h, params[f"dense_{i}"]), 0.0)
    return _softmax(_dense(h, params["logits"]))


def predict_proba(model_dir: Path, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Probabilities float[n, classes] for raw (unscaled) sequences, as ``predict --proba``.

    Args:
      model_dir: a model directory written by ``rnnfc train``.
      inputs: float[n, time, features], raw values; anything beyond each length is ignored.
      lengths: int[n], valid steps of each sequence.
    """
    model = json.loads((model_dir / "config.json").read_text())["model"]
    prep = json.loads((model_dir / "preprocessing.json").read_text())
    stacked = serialization.msgpack_restore((model_dir / "params.msgpack").read_bytes())
    members = len(stacked["logits"]["bias"])  # every leaf's leading axis is the member
    member_params = [
        _map(lambda leaf, m=m: np.asarray(leaf[m], np.float64), stacked) for m in range(members)
    ]
    out = []
    for x, length in zip(inputs, lengths, strict=True):
        scaled = _scale(prep, np.asarray(x[:length], np.float64))
        out.append(np.mean([_classify(model, p, scaled) for p in member_params], axis=0))
    return np.stack(out)


def _map(fn, tree):
    if isinstance(tree, dict):
        return {key: _map(fn, value) for key, value in tree.items()}
    return fn(tree)
