"""Train and predict on a dataset several times larger than the memory the process may use.

Writes a float32 ``.npy`` dataset of ``--data-gb`` (and its labels) without holding it in
memory, then runs ``rnnfc train`` (one epoch) and ``rnnfc predict`` on it as fresh
processes inside a memory cgroup limited to ``--limit-mb`` (Linux, root; without it the
processes run unlimited and the script says so). Reports each process's peak resident
memory and its sequences per second. The page cache that reads the file is reclaimable
and does not count against the process; anonymous memory above the limit would get the
process killed. Run by hand: ``python benchmarks/out_of_core.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def write_dataset(directory: Path, gigabytes: float, steps: int, features: int) -> int:
    """Sequences whose class shifts their mean, written block by block; returns N."""
    n = int(gigabytes * 2**30 / (steps * features * 4))
    inputs = np.lib.format.open_memmap(
        directory / "X.npy", mode="w+", dtype=np.float32, shape=(n, steps, features)
    )
    labels = np.empty(n, np.int64)
    rng = np.random.default_rng(0)
    block = 50_000
    for start in range(0, n, block):
        stop = min(start + block, n)
        classes = rng.integers(0, 4, stop - start)
        values = rng.normal(size=(stop - start, steps, features)).astype(np.float32)
        values += 0.5 * classes[:, None, None]
        inputs[start:stop] = values
        labels[start:stop] = classes
    inputs.flush()
    del inputs
    np.save(directory / "y.npy", labels)
    return n


def drop_page_cache() -> None:
    """Evict cached file pages (root): pages are charged to the cgroup that reads them."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as err:
        print(f"cannot drop the page cache ({err})", file=sys.stderr)


class MemoryLimit:
    """A cgroup-v1 memory cgroup that the measured processes join before they start."""

    def __init__(self, megabytes: int):
        self.path = CGROUP_ROOT / f"rnnfc-bench-{os.getpid()}"
        self.active = False
        try:
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(megabytes * 2**20))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(megabytes * 2**20))
            self.active = True
        except OSError as err:
            print(f"no memory cgroup ({err}); running without a limit", file=sys.stderr)

    def join(self) -> None:
        """``preexec_fn``: move the child into the cgroup before it execs."""
        if self.active:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mib(self) -> float:
        """The cgroup's peak usage: the processes' memory plus the file pages they cached."""
        peak = self.path / "memory.max_usage_in_bytes"
        return int(peak.read_text()) / 2**20 if self.active and peak.exists() else float("nan")

    def close(self) -> None:
        if self.active:
            self.path.rmdir()


def _anonymous_mib(pid: int) -> float:
    """The process's resident anonymous memory (heap, arrays): what a limit must hold.
    File pages of the memory map are resident too, but reclaimable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_limited(command: list[str], limit: MemoryLimit) -> tuple[int, float, float, float, str]:
    """Returns (exit code, wall seconds, peak anonymous MiB, peak RSS MiB of every child
    so far, stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit.join
    )
    peak_anonymous = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            peak_anonymous[0] = max(peak_anonymous[0], _anonymous_mib(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    sampling.set()
    sampler.join()
    if process.returncode != 0:
        print(err.decode()[-2000:], file=sys.stderr)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    wall = time.perf_counter() - started
    return process.returncode, wall, peak_anonymous[0], usage, out.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, default=1024)
    parser.add_argument("--data-gb", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--features", type=int, default=24)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rnnfc-ooc-"))
    n = write_dataset(work, args.data_gb, args.steps, args.features)
    size_mb = (work / "X.npy").stat().st_size / 2**20
    print(
        f"dataset: {n} sequences x {args.steps} steps x {args.features} features, "
        f"{size_mb:.0f} MiB on disk; memory limit {args.limit_mb} MiB"
    )
    drop_page_cache()  # so the measured processes read the file themselves
    limit = MemoryLimit(args.limit_mb)
    rnnfc = [sys.executable, "-m", "rnnfc_cli"]
    model = ["--hidden", "32", "--unidirectional", "--dense", "32", "--batch-size", "512"]
    try:
        code, wall, anonymous, peak, out = run_limited(
            [
                *rnnfc,
                "train",
                str(work / "X.npy"),
                "--labels",
                str(work / "y.npy"),
                "-m",
                str(work / "model"),
                *model,
                "--epochs",
                "1",
                "--min-steps",
                "0",
                "--json",
                "-q",
            ],
            limit,
        )
        summary = json.loads(out) if code == 0 else {}
        trained = summary.get("train_data", {}).get("sequences", 0)
        seconds = summary.get("train_seconds", float("nan"))
        print(
            f"train (1 epoch): exit {code}, {wall:.0f} s wall, peak anonymous memory "
            f"{anonymous:.0f} MiB (RSS with mapped file pages: {peak:.0f} MiB), "
            f"{trained / seconds:.0f} sequences/s in training ({trained} sequences, "
            f"{seconds:.0f} s)"
        )
        code, wall, anonymous, _, _ = run_limited(
            [
                *rnnfc,
                "predict",
                str(work / "model"),
                str(work / "X.npy"),
                "-o",
                str(work / "labels.csv"),
                "-q",
            ],
            limit,
        )
        print(
            f"predict: exit {code}, {wall:.0f} s wall, peak anonymous memory "
            f"{anonymous:.0f} MiB, {n / wall:.0f} sequences/s (whole process)"
        )
        print(
            f"the cgroup's peak usage, cached file pages included: {limit.peak_mib():.0f} MiB "
            "(at the limit, the kernel evicts cached pages of the file; nothing was killed)"
        )
    finally:
        limit.close()
        for path in sorted(work.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
