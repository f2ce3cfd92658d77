"""End to end, as a user times it: the whole ``rnnfc train`` process against a plain
PyTorch script that trains the same model on the same data, both fresh processes.

The job (issue #17): 8,192 sequences of 128 steps and 8 features, 5 classes; a one-way
LSTM of 128 units, its last state, a Dense layer of 64, batch 64, Adam(W) at 1e-3, 2
epochs, 10 % of the data held out and scored after each epoch, the best epoch's weights
written to disk. rnnfc runs with the flags that make its model that one
(``--conv none --unidirectional --pool last --patch 1 --dropout 0 --hidden 128 --dense 64
--refit off --min-steps 0``); the torch script is what a user would write by hand
(``torch.nn.LSTM``, a DataLoader-free loop over shuffled index batches, ``torch.save``).

Each repeat runs rnnfc then torch (interleaved, so drift in outside load hits both);
rnnfc's first run starts with an empty compilation cache (``RNNFC_CACHE_DIR`` a fresh
directory) and is reported apart as "cold": the later ones find the programs it compiled,
as a user's second run on data of the same shapes does. Ratios are torch's median wall
time over rnnfc's (above 1: rnnfc is faster).

Run by hand on a quiet machine, from the repository root, with the bench extra
(``pip install ".[bench]"``)::

    python benchmarks/e2e.py                # 1 cold + 3 warm repeats, ~2 minutes on 2 cores
    python benchmarks/e2e.py --repeats 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model

SEQUENCES, STEPS, FEATURES, CLASSES = 8192, 128, 8, 5
HIDDEN, DENSE, BATCH, EPOCHS, VAL_SPLIT = 128, 64, 64, 2, 0.1

RNNFC_FLAGS = [
    "--conv", "none", "--unidirectional", "--pool", "last", "--patch", "1",
    "--dropout", "0", "--hidden", str(HIDDEN), "--dense", str(DENSE),
    "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--val-split", str(VAL_SPLIT),
    "--refit", "off", "--min-steps", "0", "--force", "--quiet", "--json",
]  # fmt: skip

TORCH_SCRIPT = """
import sys, time
import numpy as np
import torch

data_path, out_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
HIDDEN, DENSE, BATCH, EPOCHS, VAL_SPLIT = {hidden}, {dense}, {batch}, {epochs}, {val_split}
torch.manual_seed(seed)
rng = np.random.default_rng(seed)
data = np.load(data_path)
x, labels = data["X"].astype(np.float32), data["y"]
classes, y = np.unique(labels, return_inverse=True)
# Per-feature scaling from the training part, as rnnfc does.
order = rng.permutation(len(x))
n_val = int(round(len(x) * VAL_SPLIT))
val_idx, train_idx = order[:n_val], order[n_val:]
mean = x[train_idx].mean(axis=(0, 1))
std = x[train_idx].std(axis=(0, 1)) + 1e-8
x = torch.from_numpy((x - mean) / std)
y = torch.from_numpy(y.astype(np.int64))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(x.shape[2], HIDDEN, batch_first=True)
        self.head = torch.nn.Sequential(
            torch.nn.Linear(HIDDEN, DENSE), torch.nn.ReLU(), torch.nn.Linear(DENSE, len(classes))
        )

    def forward(self, inputs):
        _, (h, _) = self.lstm(inputs)
        return self.head(h[-1])


model = Model()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
loss_fn = torch.nn.CrossEntropyLoss()
best = -1.0
for epoch in range(EPOCHS):
    model.train()
    shuffled = torch.from_numpy(rng.permutation(train_idx))
    for start in range(0, len(shuffled), BATCH):
        index = shuffled[start : start + BATCH]
        optimizer.zero_grad()
        loss = loss_fn(model(x[index]), y[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[val_idx]).argmax(1) == y[val_idx]).float().mean().item()
    if accuracy > best:
        best = accuracy
        torch.save(model.state_dict(), out_path)
print(best)
"""


def make_data(path: Path, seed: int = 0) -> None:
    """Noisy sums of sines whose frequencies depend on the class: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, SEQUENCES)
    t = np.arange(STEPS)[None, :, None]
    freq = (1 + labels)[:, None, None] * (0.02 + 0.01 * np.arange(FEATURES))[None, None, :]
    phase = rng.uniform(0, 2 * np.pi, (SEQUENCES, 1, FEATURES))
    x = np.sin(2 * np.pi * freq * t + phase) + rng.normal(0, 1.0, (SEQUENCES, STEPS, FEATURES))
    np.savez(path, X=x.astype(np.float32), y=np.array([f"c{k}" for k in labels]))


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats (after one cold)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data = work / "data.npz"
        make_data(data)
        script = work / "torch_lstm.py"
        script.write_text(
            TORCH_SCRIPT.format(
                hidden=HIDDEN, dense=DENSE, batch=BATCH, epochs=EPOCHS, val_split=VAL_SPLIT
            )
        )
        env = {**os.environ, "RNNFC_CACHE_DIR": str(work / "cache")}
        rnnfc = [sys.executable, "-m", "rnnfc_cli", "train", str(data), "-m", str(work / "m")]
        torch = [sys.executable, str(script), str(data), str(work / "torch.pt")]
        times: dict[str, list[float]] = {"rnnfc cold": [], "rnnfc": [], "torch": []}
        accuracy: dict[str, float] = {}
        for repeat in range(args.repeats + 1):
            seconds, out = _timed([*rnnfc, *RNNFC_FLAGS], env)
            times["rnnfc cold" if repeat == 0 else "rnnfc"].append(seconds)
            accuracy["rnnfc"] = json.loads(out)["best_val_accuracy"]
            seconds, out = _timed([*torch, str(repeat)], env)
            times["torch"].append(seconds)
            accuracy["torch"] = float(out.strip().splitlines()[-1])
            print(
                f"repeat {repeat}: "
                + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v),
                file=sys.stderr,
            )
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "machine": cpu_model(),
        "job": f"{SEQUENCES} x {STEPS} x {FEATURES}, {CLASSES} classes, LSTM {HIDDEN}, "
        f"Dense {DENSE}, batch {BATCH}, {EPOCHS} epochs",
        "median_seconds": {k: round(v, 2) for k, v in medians.items()},
        "runs": {k: [round(s, 2) for s in v] for k, v in times.items()},
        "torch_over_rnnfc": round(medians["torch"] / medians["rnnfc"], 3),
        "torch_over_rnnfc_cold": round(medians["torch"] / medians["rnnfc cold"], 3),
        "val_accuracy": accuracy,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['job']} on {result['machine']}")
    for name, value in medians.items():
        print(f"  {name:11s} median {value:6.2f} s  runs {result['runs'][name]}")
    print(
        f"  torch / rnnfc: {result['torch_over_rnnfc']:.2f}x warm, "
        f"{result['torch_over_rnnfc_cold']:.2f}x cold (above 1: rnnfc faster)"
    )
    print(
        f"  best validation accuracy: rnnfc {accuracy['rnnfc']:.3f}, torch {accuracy['torch']:.3f}"
    )


if __name__ == "__main__":
    main()
