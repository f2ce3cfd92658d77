"""Training-step and inference throughput of rnnfc's model code against PyTorch.

Measures sequences per second of one optimizer step (forward, backward, clipping, AdamW)
and of inference, for rnnfc's own classifier (built and stepped through its public
functions ``models.build_model``, ``train.create_train_state``, ``train.make_ensemble_step``
and ``train.make_proba_fn``, on the devices ``train.fit`` would split the batch over, so the
numbers always describe the current implementation) and
for ``torch.nn.LSTM`` / ``torch.nn.GRU`` with a ``nn.Linear`` head of the same sizes: one
recurrent layer, the last hidden state fed to the head, float32, the same batch on both
sides, AdamW with rnnfc's default learning rate, weight decay and gradient clipping.

``--cells default`` measures the model ``rnnfc train`` builds for numeric data by default
(three conv blocks 64:8, 128:5, 64:3 with batch norm and ReLU, the features max-pooled by
``--downsample auto`` into a bidirectional LSTM of 64, its last states and maximum over
time joined with the conv features' average, branch dropout 0.5, Dense 128 with dropout
0.1) at rnnfc's default batch size, against the same model written in plain PyTorch
(``Conv1d``/``BatchNorm1d``/``MaxPool1d``/``LSTM(bidirectional=True)``).

Every sequence is full length, so both sides do the same work. After a warm-up (JAX
compiles), each measurement runs A B A B ... for ``--rounds`` rounds, each round timing
enough steps to take about half a second, and reports medians and the spread
(max - min) / median. A float32 1024x1024 ``jnp.dot``, timed at the start and the end of
the run (the better is kept), gives the peak that rnnfc's achieved GFLOP/s are compared
with (LSTM forward FLOPs ~ 2*B*T*(F+H)*4H, GRU 3H, training ~ 3x forward).

Run by hand on a quiet machine (other load skews the two sides differently), from the
repository root in an environment with rnnfc and torch installed::

    python benchmarks/throughput.py                   # LSTM, GRU and the default model
    python benchmarks/throughput.py --cells lstm --rounds 9
    python benchmarks/throughput.py --cells default   # the default model against torch's
    python benchmarks/throughput.py --quick           # smoke test, about half a minute
    python benchmarks/throughput.py --json > out.json # table on stderr, ratios on stdout
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import torch
from machine import cpu_model

import rnnfc_cli.train as rt
from rnnfc_cli import inference, parallel, runtime
from rnnfc_cli.api import auto_downsample
from rnnfc_cli.config import DEFAULT_CONV, ModelConfig, TrainConfig, parse_conv
from rnnfc_cli.models import build_model

NUM_CLASSES = 4
INFER_BATCH = 1024
# (batch, time, features, hidden) of the training measurements; inference reuses (T, F, H).
CONFIGS = ((64, 128, 8, 128), (256, 128, 8, 128), (32, 32, 12, 64))
QUICK_CONFIGS = ((32, 32, 12, 64),)
# The default model's: rnnfc's default batch and hidden size, the issue-17 job's shape and
# a long univariate series (downsampled by 2 and by 8 before the recurrence).
DEFAULT_MODEL_CONFIGS = ((32, 128, 8, 64), (32, 512, 1, 64))
QUICK_DEFAULT_MODEL_CONFIGS = ((32, 128, 8, 64),)
GATES = {"lstm": 4, "gru": 3}
DEFAULT_MODEL = "default"
MATMUL_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class Row:
    """One rnnfc-vs-torch comparison.

    Attributes:
      mode: "train" or "infer".
      cell: "lstm", "gru" or "default" (the default model).
      shape: (batch, time, features, hidden).
      rnnfc: sequences per second of each round.
      torch: sequences per second of each round.
      flops: floating-point operations of one step (one batch).
    """

    mode: str
    cell: str
    shape: tuple[int, int, int, int]
    rnnfc: tuple[float, ...]
    torch: tuple[float, ...]
    flops: float

    @property
    def key(self) -> str:
        b, t, f, h = self.shape
        return f"{self.mode}/{self.cell}/B{b}_T{t}_F{f}_H{h}"

    @property
    def ratio(self) -> float:
        return statistics.median(self.rnnfc) / statistics.median(self.torch)

    def gflops(self) -> float:
        """rnnfc's achieved GFLOP/s at its median throughput."""
        return statistics.median(self.rnnfc) / self.shape[0] * self.flops / 1e9


def step_flops(cell: str, shape: tuple[int, int, int, int], train: bool) -> float:
    """Matmul FLOPs of one batch through the recurrent layer (the head is negligible);
    for the default model, through its convolutions and both directions of its LSTM."""
    b, t, f, h = shape
    if cell == DEFAULT_MODEL:
        forward, channels = 0, f
        for out, kernel in parse_conv(DEFAULT_CONV):
            forward += 2 * b * t * kernel * channels * out
            channels = out
        steps = -(-t // _downsample(t))
        forward += 2 * 2 * b * steps * (channels + h) * GATES["lstm"] * h
    else:
        forward = 2 * b * t * (f + h) * GATES[cell] * h
    return 3 * forward if train else forward


def _downsample(steps: int) -> int:
    """``--downsample auto`` for sequences of ``steps``."""
    return auto_downsample(np.array([steps]))


def _timed(fn: Callable[[int], None], iters: int) -> float:
    start = time.perf_counter()
    fn(iters)
    return time.perf_counter() - start


def _calibrate(fn: Callable[[int], None], target_s: float) -> int:
    """Iterations that make one timed call of ``fn`` last about ``target_s``."""
    once = _timed(fn, 1)
    return max(1, math.ceil(target_s / max(once, 1e-6)))


def _inputs(shape: tuple[int, int, int, int], seed: int) -> tuple[np.ndarray, ...]:
    b, t, f, _ = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, t, f), dtype=np.float32)
    lengths = np.full(b, t, np.int32)
    labels = rng.integers(0, NUM_CLASSES, b).astype(np.int32)
    return x, lengths, labels


# "float32", or "bf16": rnnfc's --precision bf16 against torch's CPU autocast to bfloat16.
PRECISION = {"value": "float32"}


def _autocast():
    """torch's mixed precision for the chosen PRECISION (a no-op context for float32)."""
    bf16 = PRECISION["value"] == "bf16"
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def _rnnfc_model(cell: str, shape: tuple[int, int, int, int]):
    _, t, f, h = shape
    common = {"precision": PRECISION["value"], "num_features": f, "num_classes": NUM_CLASSES}
    if cell == DEFAULT_MODEL:  # ModelConfig's defaults, with what train resolves for numbers
        config = ModelConfig(**common, hidden=h, conv=DEFAULT_CONV, downsample=_downsample(t))
    else:
        config = ModelConfig(
            **common,
            cell=cell,
            hidden=h,
            layers=1,
            dense=(),
            dropout=0.0,
            pool="last",
            bidirectional=False,
            patch=1,
        )
    return build_model(config)


def _placement(batch_size: int, steps: int | None):
    """The devices and shardings ``train.fit`` and ``predict`` use for this batch of
    sequences ``steps`` long: on CPU one device per core when splitting the batch pays."""
    devices = parallel.data_devices(0, batch_size, steps=steps)
    return devices, parallel.batch_sharding(devices)


def rnnfc_train(cell: str, shape: tuple[int, int, int, int]) -> Callable[[int], None]:
    """A callable running ``n`` compiled rnnfc train steps and waiting for the result."""
    model = _rnnfc_model(cell, shape)
    _, shardings = _placement(shape[0], shape[1])
    # A long schedule keeps the learning rate away from zero for the whole benchmark.
    state = rt.create_train_state(model, TrainConfig(), 1_000_000)
    x, lengths, labels = _inputs(shape, seed=0)
    batch = rt.Batch(x, lengths, labels, np.ones(len(x), np.float32))
    key = inference.member_keys(0, 1)
    if shardings is None:
        batch = jax.device_put(batch)
    else:
        state, key = parallel.place((state, key), shardings[1])
        batch = jax.device_put(batch, shardings[0])
    step = rt.make_ensemble_step(np.ones(NUM_CLASSES, np.float32), 0.0, shardings)
    holder = [state]

    def run(n: int) -> None:
        state = holder[0]
        for _ in range(n):
            state, metrics = step(state, batch, key)
        jax.block_until_ready((state, metrics))
        holder[0] = state

    return run


def rnnfc_infer(cell: str, shape: tuple[int, int, int, int]) -> Callable[[int], None]:
    """A callable running ``n`` compiled rnnfc inference calls on one batch."""
    model = _rnnfc_model(cell, shape)
    _, shardings = _placement(shape[0], shape[1])
    params = rt.create_train_state(model, TrainConfig(), 1).params
    x, lengths, _ = _inputs(shape, seed=0)
    if shardings is None:
        x, lengths = jax.device_put((x, lengths))
    else:
        params = parallel.place(params, shardings[1])
        x, lengths = jax.device_put((x, lengths), shardings[0])
    infer = inference.make_proba_fn(model)

    def run(n: int) -> None:
        for _ in range(n):
            out = infer(params, x, lengths)
        jax.block_until_ready(out)

    return run


class TorchClassifier(torch.nn.Module):
    """One LSTM/GRU layer, batch first, its last hidden state fed to a Linear head."""

    def __init__(self, cell: str, features: int, hidden: int, classes: int):
        super().__init__()
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.rnn = rnn(features, hidden, num_layers=1, batch_first=True)
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1])


class TorchDefaultModel(torch.nn.Module):
    """rnnfc's default model for numbers, as one would write it in PyTorch (every sequence
    full length, so no masking): conv blocks, max-pooling, a bidirectional LSTM whose last
    states and maximum over time, dropped whole for half the examples in training, join
    the conv features' average before a Dense head."""

    def __init__(self, features: int, steps: int, hidden: int, classes: int):
        super().__init__()
        layers, channels = [], features
        for out, kernel in parse_conv(DEFAULT_CONV):
            layers += [
                torch.nn.Conv1d(channels, out, kernel, padding="same", bias=False),
                torch.nn.BatchNorm1d(out, momentum=0.1),
                torch.nn.ReLU(),
            ]
            channels = out
        self.conv = torch.nn.Sequential(*layers)
        size = _downsample(steps)
        self.pool = torch.nn.MaxPool1d(size, ceil_mode=True) if size > 1 else torch.nn.Identity()
        self.rnn = torch.nn.LSTM(channels, hidden, batch_first=True, bidirectional=True)
        self.branch_dropout = 0.5
        self.head = torch.nn.Sequential(
            torch.nn.Linear(4 * hidden + channels, 128),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(128, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x.transpose(1, 2))  # [batch, channels, time]
        skip = features.mean(dim=2)
        outputs, (h, _) = self.rnn(self.pool(features).transpose(1, 2))
        states = torch.cat([h[0], h[1], outputs.amax(dim=1)], dim=1)
        if self.training:
            keep = torch.rand(len(x), 1) >= self.branch_dropout
            states = states * keep / (1 - self.branch_dropout)
        return self.head(torch.cat([states, skip], dim=1))


def _torch_model(cell: str, shape: tuple[int, int, int, int]) -> torch.nn.Module:
    _, t, f, h = shape
    torch.manual_seed(0)
    if cell == DEFAULT_MODEL:
        return TorchDefaultModel(f, t, h, NUM_CLASSES)
    return TorchClassifier(cell, f, h, NUM_CLASSES)


def torch_train(cell: str, shape: tuple[int, int, int, int]) -> Callable[[int], None]:
    """A callable running ``n`` torch optimizer steps with rnnfc's default settings."""
    config = TrainConfig()
    model = _torch_model(cell, shape).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    x, _, labels = _inputs(shape, seed=0)
    x, labels = torch.from_numpy(x), torch.from_numpy(labels).long()

    def run(n: int) -> None:
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            with _autocast():
                loss = torch.nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            if config.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()

    return run


def torch_infer(cell: str, shape: tuple[int, int, int, int]) -> Callable[[int], None]:
    """A callable running ``n`` torch inference calls on one batch."""
    model = _torch_model(cell, shape).eval()
    x = torch.from_numpy(_inputs(shape, seed=0)[0])

    def run(n: int) -> None:
        with torch.inference_mode(), _autocast():
            for _ in range(n):
                model(x)

    return run


def compare(
    mode: str, cell: str, shape: tuple[int, int, int, int], rounds: int, target_s: float
) -> Row:
    """Warm both sides up, then time them alternately for ``rounds`` rounds."""
    make_rnnfc, make_torch = (
        (rnnfc_train, torch_train)
        if mode == "train"
        else (
            rnnfc_infer,
            torch_infer,
        )
    )
    sides = [make_rnnfc(cell, shape), make_torch(cell, shape)]
    for fn in sides:
        fn(2)
    iters = [_calibrate(fn, target_s) for fn in sides]
    rates: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, fn in enumerate(sides):
            rates[i].append(iters[i] * shape[0] / _timed(fn, iters[i]))
    return Row(
        mode,
        cell,
        shape,
        tuple(rates[0]),
        tuple(rates[1]),
        step_flops(cell, shape, mode == "train"),
    )


def matmul_peak(reps: int = 30) -> tuple[float, float, float]:
    """Best and median GFLOP/s of a float32 jnp.dot, and the best of torch.mm, same size."""
    n = MATMUL_SIZE
    flops = 2 * n**3
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
    torch.mm(ta, tb)
    torch_times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(ta, tb)
        torch_times.append(time.perf_counter() - start)
    return (
        flops / min(times) / 1e9,
        flops / statistics.median(times) / 1e9,
        flops / min(torch_times) / 1e9,
    )


def _spread(values: tuple[float, ...]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def render(rows: list[Row], peak: float) -> str:
    """The comparison table as fixed-width text."""
    head = (
        f"{'mode':<5} {'cell':<7} {'B':>5} {'T':>4} {'F':>3} {'H':>4} "
        f"{'rnnfc seq/s':>12} {'sprd':>5} {'torch seq/s':>12} {'sprd':>5} "
        f"{'ratio':>6} {'GFLOP/s':>8} {'%peak':>6}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        b, t, f, h = row.shape
        lines.append(
            f"{row.mode:<5} {row.cell:<7} {b:>5} {t:>4} {f:>3} {h:>4} "
            f"{statistics.median(row.rnnfc):>12.0f} {_spread(row.rnnfc):>5.0%} "
            f"{statistics.median(row.torch):>12.0f} {_spread(row.torch):>5.0%} "
            f"{row.ratio:>6.2f} {row.gflops():>8.1f} {row.gflops() / peak:>6.1%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    runtime.configure_jax()  # rnnfc's XLA flags and cache, as the CLI has them
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cells",
        default="lstm,gru,default",
        help="comma-separated: lstm, gru (one layer alone), default (rnnfc's default model)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (5)")
    parser.add_argument("--quick", action="store_true", help="one small config, 2 rounds")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch intra-op threads (all cores)"
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    parser.add_argument(
        "--precision",
        choices=("float32", "bf16"),
        default="float32",
        help="bf16: rnnfc --precision bf16 against torch.autocast(bfloat16), both sides",
    )
    args = parser.parse_args(argv)
    PRECISION["value"] = args.precision
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in (*GATES, DEFAULT_MODEL)]
    if unknown or not cells:
        parser.error(f"--cells takes lstm, gru and/or default, not {args.cells!r}")
    rounds = args.rounds or (2 if args.quick else 5)
    target_s = 0.2 if args.quick else 0.5

    def configs_of(cell: str) -> tuple[tuple[int, int, int, int], ...]:
        if cell == DEFAULT_MODEL:
            return QUICK_DEFAULT_MODEL_CONFIGS if args.quick else DEFAULT_MODEL_CONFIGS
        return QUICK_CONFIGS if args.quick else CONFIGS

    configs = [shape for cell in cells for shape in configs_of(cell)]

    cores = os.cpu_count() or 1
    torch.set_num_threads(args.torch_threads or cores)
    report = sys.stderr if args.json else sys.stdout

    def say(text: str = "") -> None:
        print(text, file=report, flush=True)

    say(f"cpu: {cpu_model()}; os.cpu_count()={cores}, affinity={len(os.sched_getaffinity(0))}")
    say(
        f"python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}, "
        f"{jax.device_count()} device), flax {flax.__version__}, torch {torch.__version__}"
    )
    say(
        f"threads: XLA CPU uses all {cores} cores (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); "
        f"torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}"
    )
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    peak, peak_median, torch_peak = matmul_peak()
    say(
        f"float32 {MATMUL_SIZE}^3 matmul: jnp.dot best {peak:.1f} GFLOP/s "
        f"(median {peak_median:.1f}); torch.mm best {torch_peak:.1f} GFLOP/s"
    )
    say(
        "rnnfc devices per batch size (as train/predict place them): "
        + ", ".join(
            f"B={b} T={t}: {len(_placement(b, t)[0])}" for b, t in sorted({c[:2] for c in configs})
        )
        + f", B={INFER_BATCH}: {len(_placement(INFER_BATCH, None)[0])}"
    )
    say(f"rounds {rounds}, ~{target_s} s per side per round, medians; sprd = (max-min)/median")
    say(f"precision: {args.precision}")
    say()

    rows = []
    for cell in cells:
        for shape in configs_of(cell):
            rows.append(compare("train", cell, shape, rounds, target_s))
        for t, f, h in dict.fromkeys(shape[1:] for shape in configs_of(cell)):
            rows.append(compare("infer", cell, (INFER_BATCH, t, f, h), rounds, target_s))
    # Outside load lowers the measured peak; the better of two measurements is nearer the truth.
    end_peak, end_median, _ = matmul_peak()
    say(f"jnp.dot again at the end: best {end_peak:.1f} GFLOP/s (median {end_median:.1f})")
    peak = max(peak, end_peak)
    say(f"%peak below is of {peak:.1f} GFLOP/s\n")
    say(render(rows, peak))
    say(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        print(
            json.dumps(
                {
                    "ratio": {row.key: round(row.ratio, 4) for row in rows},
                    "rnnfc_seq_per_s": {row.key: statistics.median(row.rnnfc) for row in rows},
                    "torch_seq_per_s": {row.key: statistics.median(row.torch) for row in rows},
                    "rnnfc_peak_fraction": {row.key: row.gflops() / peak for row in rows},
                    "matmul_peak_gflops": peak,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
