"""Reading a large long CSV: in memory, converted into the cache, and again from the cache.

Writes a long CSV of ``--sequences`` sequences (50 steps, 4 features), then reads it with
``rnnfc_cli.readers.read_sequences`` in three fresh processes: with the cache turned off (the
in-memory reader), with an empty cache (the streaming conversion) and with the cache
filled. Prints each one's time and peak resident memory. Run by hand:
``python benchmarks/csv_cache.py``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_READ = """
import resource, sys, time
from rnnfc_cli import readers
from rnnfc_cli.readers import csv_cache
csv_cache.MIN_BYTES = 2**62 if sys.argv[2] == "off" else 0
started = time.perf_counter()
table = readers.read_sequences(sys.argv[1])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{seconds:.1f} s, peak {peak:.0f} MiB, {table.inputs.shape}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=40_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rnnfc-csv-"))
    path = work / "long.csv"
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "time", "a", "b", "c", "d", "label"])
        for i in range(args.sequences):
            values = rng.normal(size=(50, 4)).round(5).tolist()
            label = "up" if i % 2 else "down"
            writer.writerows([f"s{i}", t, *row, label] for t, row in enumerate(values))
    print(f"{path.stat().st_size / 1e6:.0f} MB long CSV, {args.sequences} sequences")
    env = {**os.environ, "RNNFC_CACHE_DIR": str(work / "cache")}
    for mode, title in (("off", "in memory"), ("on", "converting"), ("on", "from the cache")):
        done = subprocess.run(
            [sys.executable, "-c", _READ, str(path), mode],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        print(f"{title:>15}: {done.stdout.strip()}")


if __name__ == "__main__":
    main()
