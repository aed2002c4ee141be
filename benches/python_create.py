#!/usr/bin/env python3
"""Compare create + run + kill from Python with the same through the Rust API.

Each iteration times ``Sandbox.create()``, ``commands.run("true")`` (the
command line runs through ``/bin/bash -l -c``) and ``kill()`` with default
options. The Rust side is ``soulbox-bench-api --task shell-true
--on-request``, which times ``Sandbox::create``, ``Sandbox::run("true")``
and ``Sandbox::kill`` in its own process on each request of this script. The
two sides take turns iteration by iteration, and which goes first
alternates, so both see the same load on a shared machine. Run it as root
with the Python that has soulbox installed:

    target/python-venv/bin/python benches/python_create.py [--iterations 200]

It builds the Rust binary in release mode first unless --bench-api names one.
The Rust side uses a current-thread tokio runtime unless
--rust-multi-thread gives it the multi-thread runtime that the binding
uses, which separates the binding's cost from the runtime's.
"""

import argparse
import statistics
import subprocess
import time
from pathlib import Path
from typing import IO, List

from soulbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent


def python_once() -> float:
    """Return the milliseconds of one create + run + kill from Python."""
    start = time.perf_counter_ns()
    sandbox = Sandbox.create()
    sandbox.commands.run("true")
    sandbox.kill()
    return (time.perf_counter_ns() - start) / 1e6


def rust_once(requests: IO[str], replies: IO[str]) -> float:
    """Return the milliseconds of one create + run + kill through Rust."""
    requests.write("\n")
    requests.flush()
    reply = replies.readline()
    if not reply:
        raise RuntimeError("soulbox-bench-api ended early; see its stderr above")
    return int(reply) / 1e6


def percentile(values: List[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(name: str, values: List[float]) -> str:
    return (
        f"{name}: n={len(values)} median {statistics.median(values):.3f} ms, "
        f"p95 {percentile(values, 0.95):.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--iterations", type=int, default=200, help="timed iterations per side (default 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed iterations per side first (default 10)"
    )
    parser.add_argument("--bench-api", type=Path, help="a built soulbox-bench-api binary")
    parser.add_argument(
        "--rust-multi-thread",
        action="store_true",
        help="run the Rust side on a multi-thread tokio runtime, as the binding does",
    )
    args = parser.parse_args()

    bench_api = args.bench_api
    if bench_api is None:
        build = ["cargo", "build", "--quiet", "--release", "-p", "soulbox-benches"]
        subprocess.run(build + ["--bin", "soulbox-bench-api"], cwd=ROOT, check=True)
        bench_api = ROOT / "target" / "release" / "soulbox-bench-api"

    total = args.warmup + args.iterations
    command = [str(bench_api), "--task", "shell-true", "--iterations", str(total), "--on-request"]
    if args.rust_multi_thread:
        command.append("--multi-thread")
    rust = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert rust.stdin is not None and rust.stdout is not None
    python_ms: List[float] = []
    rust_ms: List[float] = []
    for index in range(total):
        if index % 2 == 0:
            py, rs = python_once(), rust_once(rust.stdin, rust.stdout)
        else:
            rs, py = rust_once(rust.stdin, rust.stdout), python_once()
        if index >= args.warmup:
            python_ms.append(py)
            rust_ms.append(rs)
    rust.stdin.close()
    rust.wait()

    ratios = [py / rs for py, rs in zip(python_ms, rust_ms)]
    py_median, rust_median = statistics.median(python_ms), statistics.median(rust_ms)
    print(summary("python", python_ms))
    print(summary("rust  ", rust_ms))
    print(f"python / rust, ratio of medians: {py_median / rust_median:.3f}")
    print(f"python / rust, median of pairwise ratios: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
