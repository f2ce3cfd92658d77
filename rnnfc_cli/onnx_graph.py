"""A trained model as one ONNX graph, built from its saved parameters with onnx's helpers.

The graph takes what ``rnnfc predict`` reads (raw values float32[batch, time, features]
and int32[batch] lengths; whatever lies past each length is ignored) and returns the
ensemble's averaged probabilities, so a service needs an ONNX runtime and nothing else.

Why by hand rather than through a converter: ``jax2onnx`` pins an older Orbax than rnnfc
needs, and ``jax2tf`` + ``tf2onnx`` would bring TensorFlow. ONNX's own ``LSTM``, ``GRU``
and ``RNN`` operators take per-sequence lengths (``sequence_lens``) and both directions,
so each recurrent layer is one operator whose runtime kernel is tuned for it, and the
rest of ``models.SequenceClassifier`` (scaling, masked convolutions, batch normalisation
folded into a scale and shift, pooling over valid steps, the Dense head) is a handful of
standard operators. Every step mirrors one in ``models.py`` or ``preprocessing.py``; the
tests hold the two to ``rnnfc predict --proba`` within 1e-5.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from onnx import TensorProto

from rnnfc_cli.config import ModelConfig, front_end_pools, parse_conv
from rnnfc_cli.preprocessing import LOG_SCALE_CLIP, Preprocessing

# 17: LayerNormalization; ReduceSum takes its axes as an input, ReduceMax as an attribute.
OPSET = 17

# ONNX's gate order, by Flax's gate names (``models._FLAX_LAYOUT``): LSTM "iofc" (c is
# Flax's g), GRU "zrh" (h is Flax's n), the simple cell's one "gate".
_ONNX_GATES = {"lstm": ("i", "o", "f", "g"), "gru": ("z", "r", "n"), "rnn": ("",)}
_ONNX_CELL = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
_BATCH_NORM_EPSILON = 1e-5  # models.MaskedBatchNorm's
_LAYER_NORM_EPSILON = 1e-6  # flax.linen.LayerNorm's
_MIN_STD = 1e-8  # preprocessing's floor for a sequence's own standard deviation
TOKENS = "tokens"  # the graph input of token ids


class _Graph:
    """Nodes and constants of one graph, each output under a fresh name."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self._names = 0

    def _name(self, stem: str) -> str:
        self._names += 1
        return f"{stem}_{self._names}"

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        name = self._name("const")
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attributes: Any) -> Any:
        """Add a node; its output name (a list of names when ``outputs`` > 1)."""
        from onnx import helper

        names = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def axes(self, *axes: int) -> str:
        return self.const(axes, np.int64)


class _Sequences:
    """The valid steps of a batch of sequences in the graph: int32[batch] ``lengths`` and
    the masks of the steps they cover, in the layouts the graph uses.

    Args:
      steps_of: a tensor whose axis ``time_axis`` is the time axis: its length is the
        number of steps the masks cover.
    """

    def __init__(self, graph: _Graph, lengths: str, steps_of: str, time_axis: int) -> None:
        self.g, self.lengths = graph, lengths
        g = graph
        steps = g.op("Gather", g.op("Shape", steps_of), g.const(time_axis, np.int64), axis=0)
        time = g.op("Range", g.const(0, np.int64), steps, g.const(1, np.int64))
        self.valid = g.op(  # bool[batch, time]
            "Less",
            g.op("Unsqueeze", time, g.axes(0)),
            g.op("Unsqueeze", g.op("Cast", lengths, to=TensorProto.INT64), g.axes(1)),
        )
        # float[batch, 1]: the count of valid steps, at least 1 (pooling's divisor)
        count = g.op("Cast", g.op("Unsqueeze", lengths, g.axes(1)), to=TensorProto.FLOAT)
        self.count = g.op("Max", count, g.const(1.0))
        self._masks: dict[str, str] = {}

    def mask(self, layout: str) -> str:
        """The valid steps shaped to broadcast over one layout: "btf" bool[batch, time, 1],
        "tbf" bool[time, batch, 1], "bct" float[batch, 1, 1, time] (a factor for Mul, on
        the front end's [batch, channels, 1, time])."""
        if layout not in self._masks:
            g = self.g
            if layout == "btf":
                mask = g.op("Unsqueeze", self.valid, g.axes(2))
            elif layout == "tbf":
                mask = g.op("Unsqueeze", g.op("Transpose", self.valid, perm=[1, 0]), g.axes(2))
            else:
                unsqueezed = g.op("Unsqueeze", self.valid, g.axes(1, 2))
                mask = g.op("Cast", unsqueezed, to=TensorProto.FLOAT)
            self._masks[layout] = mask
        return self._masks[layout]

    def masked(self, values: str, layout: str, fill: float = 0.0) -> str:
        return self.g.op("Where", self.mask(layout), values, self.g.const(fill))

    def mean(self, values: str, layout: str) -> str:
        """float[batch, features]: the mean over valid steps (``pool_states``' "mean")."""
        g = self.g
        axis = layout.index("t")
        total = g.op("ReduceSum", self.masked(values, layout), g.axes(axis), keepdims=0)
        return g.op("Div", total, self.count)


def _divide_up(g: _Graph, lengths: str, size: int) -> str:
    """``ceil(lengths / size)``: the lengths after folding or pooling ``size`` steps."""
    return g.op("Div", g.op("Add", lengths, g.const(size - 1, np.int32)), g.const(size, np.int32))


def _dense(g: _Graph, x: str, layer: dict[str, np.ndarray]) -> str:
    y = g.op("MatMul", x, g.const(layer["kernel"]))
    return g.op("Add", y, g.const(layer["bias"])) if "bias" in layer else y


def _scale(g: _Graph, seqs: _Sequences, x: str, prep: Preprocessing) -> str:
    """``preprocessing.scale_block`` of [batch, time, features]: zero at padded steps
    whatever they held (NaN too: ``Where``, not a product, drops them)."""
    if prep.normalize in ("sequence", "sequence+scale"):
        x = seqs.masked(x, "btf")
        count = g.op("Unsqueeze", seqs.count, g.axes(2))  # lengths >= 1: the count itself
        mean = g.op("Div", g.op("ReduceSum", x, g.axes(1), keepdims=1), count)
        centred = seqs.masked(g.op("Sub", x, mean), "btf")
        squares = g.op("ReduceSum", g.op("Mul", centred, centred), g.axes(1), keepdims=1)
        std = g.op("Max", g.op("Sqrt", g.op("Div", squares, count)), g.const(_MIN_STD))
        scaled = g.op("Div", centred, std)
        if prep.log_scale_mean:  # [batch, 1, features], then one per step
            level = g.op("Sub", g.op("Log", std), g.const(prep.log_scale_mean))
            level = g.op("Div", level, g.const(prep.log_scale_std))
            bounds = g.const(-LOG_SCALE_CLIP), g.const(LOG_SCALE_CLIP)
            level = g.op("Expand", g.op("Clip", level, *bounds), g.op("Shape", scaled))
            scaled = g.op("Concat", scaled, level, axis=2)
    else:
        mean, std = g.const(prep.feature_mean), g.const(prep.feature_std)
        scaled = g.op("Div", g.op("Sub", x, mean), std)
    return seqs.masked(scaled, "btf")


def _front_end(
    g: _Graph, seqs: _Sequences, x: str, config: ModelConfig, params: dict
) -> tuple[str, list[str], str]:
    """``SequenceClassifier._front_end`` of [batch, time, features] that are zero at padded
    steps: conv blocks over valid steps. Returns the features for the recurrent layers
    as [batch, channels, time], zero past each end, the skip path's [mean] (or []) and
    their lengths.

    The blocks run as 2-D convolutions of [batch, channels, 1, time]: onnxruntime's CPU
    provider blocks the channels of 2-D convolutions for its vector units (NCHWc), which
    halved their time against the 1-D form on the default model (97 -> 46 ms at batch
    1024, reordering included 195 -> 168 ms in all)."""
    x = g.op("Unsqueeze", g.op("Transpose", x, perm=[0, 2, 1]), g.axes(2))
    blocks = parse_conv(config.conv)
    pools = front_end_pools(config.downsample, config.block_pool, len(blocks))
    joined = []
    for i, (_, kernel) in enumerate(blocks):
        if i:  # the padded steps of the previous block's output back to zero
            x = g.op("Mul", x, seqs.mask("bct"))
        # The batch normalisation's scale and shift folded into the convolution.
        norm = params[f"conv_norm_{i}"]
        factor = norm["scale"] / np.sqrt(norm["var"] + _BATCH_NORM_EPSILON)
        weights = params[f"conv_{i}"]["kernel"].transpose(2, 1, 0) * factor[:, None, None]
        weights = weights[:, :, None, :]
        shift = norm["bias"] - norm["mean"] * factor
        low = (kernel - 1) // 2  # lax's "SAME": the odd step of padding goes at the end
        x = g.op(
            "Conv", x, g.const(weights), g.const(shift), kernel_shape=[1, kernel],
            pads=[0, low, 0, kernel - 1 - low],
        )  # fmt: skip
        x = g.op("Mul", g.op("Relu", x), seqs.mask("bct"))
        if i == len(blocks) - 1 and config.skip:
            total = g.op("ReduceSum", x, g.axes(2, 3), keepdims=0)
            joined.append(g.op("Div", total, seqs.count))
        if pools[i] > 1:
            size = pools[i]
            window = {"kernel_shape": [1, size], "strides": [1, size], "ceil_mode": 1}
            if i < len(blocks) - 1 and config.block_pooling == "mean":
                # models.mean_pool_steps: the windows' average of the features over their
                # average of the mask is the mean over valid steps, whatever divisor
                # AveragePool takes for a window cut short by the end (the same for both);
                # a window past the end is 0 / (1 / size) = 0.
                valid = g.op("AveragePool", seqs.mask("bct"), **window)
                valid = g.op("Max", valid, g.const(1.0 / size))
                x = g.op("Div", g.op("AveragePool", x, **window), valid)
            else:
                # Features are >= 0 and zero past each end, so a window cut short by the
                # end (ceil_mode) has the maximum that models.max_pool_steps' zero padding
                # gives.
                x = g.op("MaxPool", x, **window)
            seqs = _Sequences(g, _divide_up(g, seqs.lengths, size), x, time_axis=3)
    return g.op("Squeeze", x, g.axes(2)), joined, seqs.lengths


def _patch(g: _Graph, x: str, size: int, features: int) -> str:
    """``models.patch_steps`` of [batch, time, features] that are zero at padded steps:
    runs of ``size`` steps folded into one step."""
    steps = g.op("Gather", g.op("Shape", x), g.const([1], np.int64), axis=0)
    size_ = g.const([size], np.int64)
    extra = g.op("Mod", g.op("Sub", size_, g.op("Mod", steps, size_)), size_)
    # [begin of batch, time, features, end of batch, time, features]
    pads = g.op("Concat", g.const([0, 0, 0, 0], np.int64), extra, g.const([0], np.int64), axis=0)
    x = g.op("Pad", x, pads)
    return g.op("Reshape", x, g.const([0, -1, size * features], np.int64))


def _cell_weights(cell_type: str, layer: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction's W [gates * hidden, inputs], R [gates * hidden, hidden] and
    B [2 * gates * hidden] in ONNX's gate order, from Flax's per-gate Dense layout."""
    cell = layer["scan"]["cell"]
    sides = []
    for side in ("i", "h"):
        kernels, biases = [], []
        for gate in _ONNX_GATES[cell_type]:
            dense = cell[f"{side}{gate}"]
            kernels.append(dense["kernel"].T)
            biases.append(dense.get("bias", np.zeros(dense["kernel"].shape[1], np.float32)))
        sides.append((np.concatenate(kernels), np.concatenate(biases)))
    (w, w_bias), (r, r_bias) = sides
    return w, r, np.concatenate([w_bias, r_bias])


def _recurrent(
    g: _Graph, seqs: _Sequences, x: str, config: ModelConfig, params: dict
) -> tuple[str, str]:
    """The recurrent stack over [time, batch, features] (the layout of ONNX's recurrent
    operators); returns per-step outputs [time, batch, directions * hidden] and the
    states after each sequence's last valid step [batch, directions * hidden]."""
    last = ""
    for depth in range(config.layers):
        names = [f"rnn_{depth}"] + ([f"rnn_{depth}_backward"] if config.bidirectional else [])
        directions = [_cell_weights(config.cell, params[name]) for name in names]
        w, r, b = (g.const(np.stack(part)) for part in zip(*directions, strict=True))
        attributes: dict[str, Any] = {
            "hidden_size": config.hidden,
            "direction": "bidirectional" if config.bidirectional else "forward",
        }
        if config.cell == "gru":
            attributes["linear_before_reset"] = 1  # Flax's reset gate scales h @ R + b
        outputs = 3 if config.cell == "lstm" else 2
        y, y_last = g.op(
            _ONNX_CELL[config.cell], x, w, r, b, seqs.lengths, outputs=outputs, **attributes
        )[:2]
        # Y [time, directions, batch, hidden] -> [time, batch, directions * hidden]
        y = g.op("Transpose", y, perm=[0, 2, 1, 3])
        x = g.op("Reshape", y, g.const([0, 0, -1], np.int64))
        y_last = g.op("Transpose", y_last, perm=[1, 0, 2])
        last = g.op("Reshape", y_last, g.const([0, -1], np.int64))
        if config.layer_norm:
            norm = params[f"layer_norm_{depth}"]
            scale, bias = g.const(norm["scale"]), g.const(norm["bias"])
            x, last = (
                g.op("LayerNormalization", t, scale, bias, axis=-1, epsilon=_LAYER_NORM_EPSILON)
                for t in (x, last)
            )
    return x, last


def _pool(g: _Graph, seqs: _Sequences, x: str, last: str, method: str, params: dict) -> str:
    """``models.pool_states`` over the valid steps of [time, batch, features]."""
    if method == "last":
        return last
    if method == "mean":
        return seqs.mean(x, "tbf")
    if method == "max":
        return g.op("ReduceMax", seqs.masked(x, "tbf", -np.inf), axes=[0], keepdims=0)
    hidden = g.op("Tanh", _dense(g, x, params["attention_hidden"]))
    scores = seqs.masked(_dense(g, hidden, params["attention_score"]), "tbf", -np.inf)
    weights = g.op("Softmax", scores, axis=0)  # [time, batch, 1]
    weighted = g.op("Mul", weights, seqs.masked(x, "tbf"))
    return g.op("ReduceSum", weighted, g.axes(0), keepdims=0)


def _embedded(
    g: _Graph, seqs: _Sequences, scaled: str | None, config: ModelConfig, params: dict
) -> str:
    """``SequenceClassifier._embedded``: the scaled numbers, then each token column's
    vectors (the graph input ``tokens``, int32[batch, time, columns] of vocabulary ids),
    zero at padded steps."""
    if not config.embeddings:
        return scaled
    parts = [] if scaled is None else [scaled]
    for c, (ids, _) in enumerate(config.embeddings):
        column = g.op("Gather", TOKENS, g.const(c, np.int64), axis=2)
        column = g.op("Clip", column, g.const(0, np.int32), g.const(ids - 1, np.int32))
        table = g.const(params[f"embed_{c}"]["embedding"])
        parts.append(g.op("Gather", table, column, axis=0))
    x = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=2)
    return seqs.masked(x, "btf")


def _member(
    g: _Graph, seqs: _Sequences, scaled: str | None, config: ModelConfig, params: dict
) -> str:
    """``SequenceClassifier.__call__`` for one member's parameters on the scaled inputs
    [batch, time, features], zero at padded steps (None for a model of tokens alone):
    probabilities."""
    x, lengths = _embedded(g, seqs, scaled, config, params), seqs.lengths
    joined = [seqs.mean(x, "btf")] if config.embeddings and config.skip else []  # the bag
    layout = "btf"
    if config.conv:
        x, conv, lengths = _front_end(g, seqs, x, config, params)
        joined, layout = joined + conv, "bct"
    if config.layers:
        if config.patch > 1:
            if layout == "bct":
                x = g.op("Transpose", x, perm=[0, 2, 1])
            embedded = config.num_features + sum(size - 1 for _, size in config.embeddings)
            features = parse_conv(config.conv)[-1][0] if config.conv else embedded
            x = _dense(g, _patch(g, x, config.patch, features), params["patch_projection"])
            lengths, layout = _divide_up(g, lengths, config.patch), "btf"
        x = g.op("Transpose", x, perm=[2, 0, 1] if layout == "bct" else [1, 0, 2])
        steps = _Sequences(g, lengths, x, time_axis=0)
        x, last = _recurrent(g, steps, x, config, params)
        joined = [_pool(g, steps, x, last, m, params) for m in config.pool.split(",")] + joined
    h = joined[0] if len(joined) == 1 else g.op("Concat", *joined, axis=-1)
    for i in range(len(config.dense)):
        h = g.op("Relu", _dense(g, h, params[f"dense_{i}"]))
    return g.op("Softmax", _dense(g, h, params["logits"]), axis=-1)


def build(config: ModelConfig, prep: Preprocessing, params: Any, metadata: dict[str, Any]) -> Any:
    """The ONNX ``ModelProto``: inputs ``inputs`` float32[batch, time, features] (left
    out for a model of tokens alone), ``lengths`` int32[batch] and, for a model that reads
    tokens, ``tokens`` int32[batch, time, columns] (vocabulary ids), output
    ``probabilities`` float32[batch, classes];
    ``params`` stacked by ensemble member (leading axis), ``metadata`` written to the
    model's ``metadata_props`` (values that are not strings as JSON)."""
    import jax
    import onnx
    from onnx import helper

    stacked = jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), params)
    members = len(jax.tree.leaves(stacked)[0])
    g = _Graph()
    numbers = prep.num_features > 0 or not prep.categorical
    seqs = _Sequences(g, "lengths", "inputs" if numbers else TOKENS, time_axis=1)
    scaled = _scale(g, seqs, "inputs", prep) if numbers else None
    probabilities = [
        _member(g, seqs, scaled, config, jax.tree.map(lambda leaf, m=m: leaf[m], stacked))
        for m in range(members)
    ]
    g.nodes.append(helper.make_node("Mean", probabilities, ["probabilities"]))
    as_float, as_int = TensorProto.FLOAT, TensorProto.INT32
    features, columns = prep.num_features, len(prep.categorical)
    graph = helper.make_graph(
        g.nodes,
        "rnnfc",
        [
            *(
                [helper.make_tensor_value_info("inputs", as_float, ["batch", "time", features])]
                if numbers
                else []
            ),
            helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]),
            *(
                [helper.make_tensor_value_info(TOKENS, as_int, ["batch", "time", columns])]
                if prep.categorical
                else []
            ),
        ],
        [
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["batch", len(prep.labels)]
            )
        ],
        initializer=g.constants,
    )
    model = helper.make_model(
        graph, producer_name="rnnfc", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = 8  # what runtimes from onnxruntime 1.10 on read
    helper.set_model_props(
        model,
        {key: v if isinstance(v, str) else json.dumps(v) for key, v in metadata.items()},
    )
    onnx.checker.check_model(model, full_check=True)
    return model
