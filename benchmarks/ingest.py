"""Reading large CSV files: in memory, converted into the cache, and again from the cache.

Writes a long CSV (sequences of 50 steps, 4 features, an id, a time and a label column) and
a wide CSV (500 steps a row and a label) of about each ``--sizes`` megabytes, then reads
each with ``rnnfc_cli.readers.read_sequences`` in fresh processes: with the cache turned
off (the in-memory reader), with an empty cache (the streaming conversion) and with the
cache filled. Prints the median time and peak resident memory of ``--repeats`` processes
each. ``--before DIR`` also runs the in-memory reader of another checkout of rnnfc (e.g.
``git worktree add /tmp/before 817f2bf``, the last commit with the csv-module reader) on
the files up to 100 MB (it needs about 30 times the file in memory), and prints the ratio.
Also times ``rnnfc --help``. Run by hand: ``python benchmarks/ingest.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Peak memory from VmHWM: ru_maxrss carries over a forking parent's own peak.
_PEAK = "int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024"
_READ = f"""
import sys, time
started = time.perf_counter()
from rnnfc_cli import readers
from rnnfc_cli.readers import csv_cache
csv_cache.MIN_BYTES = 2**62 if sys.argv[2] == "off" else 0
table = readers.read_sequences(sys.argv[1])
seconds = time.perf_counter() - started
print(seconds, {_PEAK}, table.inputs.shape)
"""
_BASELINE = f"print({_PEAK})"
_BEFORE_MAX_BYTES = 100 * 10**6


def write_long(path: Path, megabytes: float, rng) -> None:
    """Sequences of 50 steps, ~48 bytes a row; written by pyarrow, block by block."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    sequences = int(megabytes * 1e6 / 48 / 50)
    with pa_csv.CSVWriter(path, _long_schema()) as writer:
        for start in range(0, sequences, 20_000):
            n = min(20_000, sequences - start)
            values = rng.normal(size=(n * 50, 4)).round(5)
            ids = np.repeat(np.arange(start, start + n), 50)
            columns = {
                "id": pa.array(np.char.add("s", ids.astype(str))),
                "time": pa.array(np.tile(np.arange(50), n)),
                **{name: pa.array(values[:, i]) for i, name in enumerate("abcd")},
                "label": pa.array(np.where(ids % 2, "up", "down")),
            }
            writer.write_table(pa.table(columns, schema=_long_schema()))


def _long_schema():
    import pyarrow as pa

    floats = [(name, pa.float64()) for name in "abcd"]
    return pa.schema([("id", pa.string()), ("time", pa.int64()), *floats, ("label", pa.string())])


def write_wide(path: Path, megabytes: float, rng) -> None:
    """Rows of a label and 500 steps, ~4.5 KB a row."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rows = int(megabytes * 1e6 / 4500)
    steps = [f"t{i}" for i in range(500)]
    schema = pa.schema([("label", pa.string())] + [(name, pa.float64()) for name in steps])
    with pa_csv.CSVWriter(path, schema) as writer:
        for start in range(0, rows, 2_000):
            n = min(2_000, rows - start)
            values = rng.normal(size=(n, 500)).round(5)
            columns = {"label": pa.array(np.where(np.arange(n) % 2, "up", "down"))}
            columns.update({name: pa.array(values[:, i]) for i, name in enumerate(steps)})
            writer.write_table(pa.table(columns, schema=schema))


def run_read(path: Path, mode: str, env: dict, pythonpath: str | None = None):
    env = dict(env)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", _READ, str(path), mode],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=pythonpath or None,
    )
    seconds, peak, _ = done.stdout.split(maxsplit=2)
    return float(seconds), float(peak)


def median_of(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def help_seconds(repeats: int) -> float:
    rnnfc = shutil.which("rnnfc") or "rnnfc"
    times = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", _TIMED_HELP, rnnfc], capture_output=True, text=True, check=True
        )
        times.append(float(done.stdout))
    return statistics.median(times)


_TIMED_HELP = """
import subprocess, sys, time
started = time.perf_counter()
subprocess.run([sys.argv[1], "--help"], capture_output=True, check=True)
print(time.perf_counter() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,500", help="approximate file sizes, in MB")
    parser.add_argument("--layouts", default="long,wide")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", help="a checkout of rnnfc to compare with")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rnnfc-ingest-"))
    rng = np.random.default_rng(0)
    baseline = float(
        subprocess.run(
            [sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True
        ).stdout
    )
    print(f"python alone: peak {baseline:.0f} MiB; `rnnfc --help` {help_seconds(5):.2f} s")
    print("| file | read | seconds | peak MiB | peak / file size |")
    print("| --- | --- | --- | --- | --- |")
    try:
        for size in (float(s) for s in args.sizes.split(",")):
            for layout in args.layouts.split(","):
                path = work / f"{layout}-{size:g}.csv"
                (write_long if layout == "long" else write_wide)(path, size, rng)
                mib = path.stat().st_size / 2**20
                name = f"{layout} {path.stat().st_size / 1e6:.0f} MB"
                results = {}
                for title, mode in (
                    ("in memory", "off"),
                    ("converting", "on"),
                    ("from the cache", "on"),
                ):
                    runs = []
                    for repeat in range(args.repeats):
                        cache = work / f"cache-{repeat}"
                        if title == "converting":
                            shutil.rmtree(cache, ignore_errors=True)
                        env = {**os.environ, "RNNFC_CACHE_DIR": str(cache)}
                        runs.append(run_read(path, mode, env))
                    results[title] = median_of(runs)
                if args.before and path.stat().st_size <= _BEFORE_MAX_BYTES:
                    env = {**os.environ, "RNNFC_CACHE_DIR": str(work / "cache-before")}
                    before = [run_read(path, "off", env, args.before) for _ in range(args.repeats)]
                    results["before, in memory"] = median_of(before)
                for title, (seconds, peak) in results.items():
                    print(f"| {name} | {title} | {seconds:.2f} | {peak:.0f} | {peak / mib:.1f}x |")
                if "before, in memory" in results:
                    ratio = results["before, in memory"][0] / results["in memory"][0]
                    print(f"| {name} | speed-up in memory | {ratio:.1f}x | | |")
                path.unlink()
                for cache in work.glob("cache-*"):
                    shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
