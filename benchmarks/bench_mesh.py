"""Per-device memory of a chunk of HVPs: seed directions over a mesh against one device.

Run: ``python -m benchmarks.bench_mesh [--sizes 10000] [--problems SPARSINE FMINSRF2]
[--devices 8] [--chunk 4]``. Simulated CPU devices are set up before JAX starts
(``XLA_FLAGS=--xla_force_host_platform_device_count``), so run it as its own process.

For each problem the jitted ``lazyhess.sparse_hessian`` is compiled three ways and XLA's
memory analysis of the compiled program read (per device: arguments, outputs and the
temporaries, where a chunk of seeds and HVP results lives):

- ``mesh``: ``mesh=`` over D devices, ``chunk_size`` seeds per device (D x chunk at once);
- ``one, same chunk``: one device, ``chunk_size`` seeds at once (the same per-device chunk);
- ``one, D x chunk``: one device with as many seeds at once as the whole mesh.

The time per call is shown for completeness: simulated devices share this machine's cores,
so it says nothing about the speed-up on real devices.
"""

from __future__ import annotations

import argparse
import os
import sys

PARSER = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
PARSER.add_argument("--sizes", type=int, nargs="+", default=[10_000])
PARSER.add_argument("--problems", nargs="+", default=["SPARSINE", "FMINSRF2"])
PARSER.add_argument("--devices", type=int, default=8)
PARSER.add_argument("--chunk", type=int, default=4)

if __name__ == "__main__" and "jax" not in sys.modules:
    count = PARSER.parse_known_args()[0].devices
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={count}")

import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import lazyhess  # noqa: E402
from benchmarks.problems import PROBLEMS  # noqa: E402

jax.config.update("jax_enable_x64", True)


def _mib(count: int) -> str:
    return f"{count / 2**20:8.2f}"


def _measure(f, x, **options) -> tuple[object, float]:
    fn = jax.jit(lazyhess.sparse_hessian(f, x, output_format="bcoo", **options))
    stats = fn.lower(x).compile().memory_analysis()
    jax.block_until_ready(fn(x))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        best = min(best, time.perf_counter() - start)
    return stats, best


def main(sizes=(10_000,), problems=("SPARSINE", "FMINSRF2"), devices=8, chunk=4) -> None:
    if jax.device_count() < devices:
        raise SystemExit(
            f"{jax.device_count()} devices; start a fresh process (XLA_FLAGS is read when JAX "
            f"starts): python -m benchmarks.bench_mesh --devices={devices}"
        )
    mesh = jax.make_mesh((devices,), ("dirs",))
    print(f"{devices} simulated CPU devices, chunk_size={chunk} seeds per device, float64")
    head = (
        f"{'problem':10} {'n':>7} {'colors':>6}  {'run':16} {'args MiB':>8} {'out MiB':>8} "
        f"{'temp MiB':>8} {'ms/call':>8}"
    )
    print(head)
    for name in problems:
        for n in sizes:
            f, x = PROBLEMS[name].make(n)
            x = np.asarray(x)
            colors = lazyhess.hessian_coloring(f, x).num_colors
            runs = (
                ("mesh", dict(mesh=mesh, chunk_size=chunk)),
                ("one, same chunk", dict(chunk_size=chunk)),
                (f"one, {devices} x chunk", dict(chunk_size=devices * chunk)),
            )
            for label, options in runs:
                stats, best = _measure(f, x, **options)
                assert stats is not None
                print(
                    f"{name:10} {x.size:7d} {colors:6d}  {label:16} "
                    f"{_mib(stats.argument_size_in_bytes)} {_mib(stats.output_size_in_bytes)} "
                    f"{_mib(stats.temp_size_in_bytes)} {best * 1e3:8.2f}"
                )


if __name__ == "__main__":
    args = PARSER.parse_args()
    main(tuple(args.sizes), tuple(args.problems), args.devices, args.chunk)
