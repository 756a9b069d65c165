"""Coloring benchmark: lazyhess colorings against asdex on the suite's Hessian patterns.

Prints a markdown table of color counts and median coloring times. Patterns are built
directly with scipy, following the structures in PROBLEMS.md (0-based indices).

    python -m benchmarks.bench_coloring            # n = 1e3, 1e4, 1e5 (+ banded 1e6)
    python -m benchmarks.bench_coloring --sizes 1000 --repeats 3
    python -m benchmarks.bench_coloring --steady 10000 --problems PENTADIAG BAND9
    python -m benchmarks.bench_coloring --floor 10000 --problems GENROSE WOODS
"""

import argparse
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

import lazyhess


def _from_pairs(n: int, rows, cols, diagonal: bool = True) -> sp.csr_array:
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    if diagonal:
        rows, cols = np.concatenate([rows, np.arange(n)]), np.concatenate([cols, np.arange(n)])
    data = np.ones(len(rows), dtype=bool)
    pattern = sp.coo_array((data, (rows, cols)), shape=(n, n)).tocsr()
    pattern = pattern + pattern.T
    pattern.sum_duplicates()
    return pattern


def _cliques(n: int, members: np.ndarray) -> sp.csr_array:
    """Diagonal plus every pair within each row of ``members`` (shape (m, s))."""
    s = members.shape[1]
    a, b = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    return _from_pairs(n, [members[:, a.ravel()].ravel()], [members[:, b.ravel()].ravel()])


def tridiagonal(n):
    """GENROSE: x_i couples with x_{i+1}."""
    i = np.arange(n - 1)
    return _from_pairs(n, [i], [i + 1])


def arrowhead(n):
    """ARWHEAD: every x_i couples with x_n."""
    return _from_pairs(n, [np.arange(n - 1)], [np.full(n - 1, n - 1)])


def banded_dense_row(n):
    """BDQRTIC: cliques {i, ..., i + 3, n - 1} for i <= n - 5."""
    i = np.arange(n - 4)[:, None]
    return _cliques(n, np.hstack([i + np.arange(4), np.full_like(i, n - 1)]))


def band3(n):
    """Cliques {i, ..., i + 3}: bandwidth 3."""
    return _cliques(n, np.arange(n - 3)[:, None] + np.arange(4))


def grid5(n):
    """CLPLATEA: 5-point stencil on a p x p grid, n = p^2 (n is rounded down)."""
    p = int(np.sqrt(n))
    index = np.arange(p * p).reshape(p, p)
    rows = [index[:, 1:].ravel(), index[1:, :].ravel()]
    cols = [index[:, :-1].ravel(), index[:-1, :].ravel()]
    return _from_pairs(p * p, rows, cols)


def grid9(n):
    """FMINSRF2: 9-point stencil (cliques of each 2 x 2 cell) on a p x p grid."""
    p = int(np.sqrt(n))
    index = np.arange(p * p).reshape(p, p)
    cell = [index[:-1, :-1], index[1:, 1:], index[1:, :-1], index[:-1, 1:]]
    return _cliques(p * p, np.stack([c.ravel() for c in cell], axis=1))


def woods(n):
    """WOODS: blocks (a, b, c, d) with pairs a-b, c-d, b-d (n rounded down to 4k)."""
    start = np.arange(0, n - n % 4, 4)
    return _from_pairs(n - n % 4, [start, start + 2, start + 1], [start + 1, start + 3, start + 3])


def band(w):
    """Band of half-width w: cliques {i, ..., i + w} (w = 2 pentadiagonal, w = 4 9-band)."""

    def build(n):
        return _cliques(n, np.arange(n - w)[:, None] + np.arange(w + 1))

    build.__name__ = f"band{w}"
    return build


def block4(n):
    """Dense 4 x 4 diagonal blocks (n rounded down to 4k)."""
    return _cliques(n - n % 4, np.arange(n - n % 4).reshape(-1, 4))


def randsp(k):
    """RANDSP(K): clique over K seeded random indices per term."""

    def build(n):
        rng = np.random.default_rng(0)
        return _cliques(n, rng.integers(0, n, size=(n, k)))

    build.__name__ = f"randsp{k}"
    return build


def sparsine(n):
    """SPARSINE: clique over {i} and ((k (i + 1) - 1) mod n) for k = 2, 3, 5, 7, 11."""
    i = np.arange(n)[:, None]
    members = (np.array([2, 3, 5, 7, 11]) * (i + 1) - 1) % n
    return _cliques(n, np.hstack([i, members]))


def dixmaane(n):
    """DIXMAANE: n = 3m, pairs (i, i + m) for i < 2m and (i, i + 2m) for i < m."""
    m = n // 3
    return _from_pairs(
        3 * m, [np.arange(2 * m), np.arange(m)], [np.arange(m, 3 * m), np.arange(2 * m, 3 * m)]
    )


def arrow(k):
    """ARROW(K): cliques {i + 1, ..., i + K} and pairs (i, j) for j < K."""

    def build(n):
        i = np.arange(n - k)[:, None]
        band = _cliques(n, i + 1 + np.arange(k))
        heads = _from_pairs(n, [np.repeat(np.arange(n), k)], [np.tile(np.arange(k), n)])
        return (band + heads).tocsr()

    build.__name__ = f"arrow{k}"
    return build


PATTERNS = {
    "tridiagonal (GENROSE)": tridiagonal,
    "arrowhead (ARWHEAD)": arrowhead,
    "band 3 + dense row (BDQRTIC)": banded_dense_row,
    "5-point grid (CLPLATEA)": grid5,
    "9-point grid (FMINSRF2)": grid9,
    "4x4 blocks (WOODS)": woods,
    "dense 4x4 blocks": block4,
    "RANDSP(2)": randsp(2),
    "RANDSP(8)": randsp(8),
    "SPARSINE": sparsine,
    "DIXMAANE": dixmaane,
    "ARROW(2)": arrow(2),
    "pentadiagonal (PENTADIAG)": band(2),
    "9-band (BAND9)": band(4),
}

# Banded patterns for the n = 1e6 rows (a dense row would make asdex's star coloring
# quadratic: about half an hour at n = 1e6).
BANDED_1E6 = {
    "tridiagonal (GENROSE)": tridiagonal,
    "band 3 (BDQRTIC without its dense row)": band3,
}

# Column colorings of patterns with a dense row need n colors and O(n^2) time; the
# benchmark skips them above this row count (auto skips them too, by its lower bound).
COLUMN_ROW_LIMIT = 1000


def _median_time(fn, repeats, budget=10.0):
    """Median over ``repeats`` runs, fewer once the runs have taken ``budget`` seconds."""
    times, result = [], None
    while len(times) < repeats and sum(times) < budget:
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times))


def _asdex(pattern, symmetric, repeats):
    import asdex

    coo = pattern.tocoo()
    sparsity = asdex.SparsityPattern.from_coo(coo.row, coo.col, coo.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        colored, seconds = _median_time(
            lambda: asdex.hessian_coloring_from_sparsity(sparsity, symmetric=symmetric), repeats
        )
    return colored.num_colors, seconds


def run(patterns, sizes, repeats, with_asdex=True):
    """Rows of the table: one per problem in ``patterns`` (name -> builder) and size."""
    rows = []
    for name, build in patterns.items():
        for n in sizes:
            pattern = build(n)
            column_ok = np.diff(pattern.indptr).max() <= COLUMN_ROW_LIMIT
            ours = {}
            for key, method, order, whole in [
                ("auto", "auto", "auto", False),
                ("whole", "auto", "auto", True),
                ("star", "star", "largest_first", False),
                ("acyclic", "acyclic", "auto", False),
            ] + ([("column", "column", "largest_first", False)] if column_ok else []):
                colored, seconds = _median_time(
                    lambda p=pattern, m=method, o=order, w=whole: (
                        lazyhess.hessian_coloring_from_sparsity(p, method=m, order=o, whole=w)
                    ),
                    repeats,
                )
                ours[key] = (colored, seconds)
            row = {
                "problem": name,
                "n": pattern.shape[0],
                "nnz": pattern.nnz,
                "auto": ours["auto"],
                "whole": ours["whole"],
                "star": ours["star"],
                "acyclic": ours["acyclic"],
                "column": ours.get("column"),
            }
            if with_asdex:
                row["asdex star"] = _asdex(pattern, True, repeats)
                row["asdex column"] = _asdex(pattern, False, repeats) if column_ok else None
            rows.append(row)
            print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def _seconds(seconds):
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _cell(colors, seconds):
    return f"{colors} / {_seconds(seconds)}"


def table(rows) -> str:
    """The rows as a markdown table."""
    with_asdex = "asdex star" in rows[0]
    head = ["problem", "n", "nnz", "auto: colors (method, order) / time"]
    head += ["whole=True: colors (method) / time", "star LF: colors / time"]
    head += ["acyclic: colors / time", "column LF: colors / time"]
    if with_asdex:
        head += ["asdex star: colors / time", "asdex column: colors / time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        auto, seconds = row["auto"]
        cells = [row["problem"], str(row["n"]), str(row["nnz"])]
        cells.append(
            f"{auto.num_colors} ({auto.method}, {auto.order}) / " + _cell("", seconds)[3:]
        )
        whole, seconds = row["whole"]
        cells.append(f"{whole.num_colors} ({whole.method}) / " + _cell("", seconds)[3:])
        cells.append(_cell(row["star"][0].num_colors, row["star"][1]))
        cells.append(_cell(row["acyclic"][0].num_colors, row["acyclic"][1]))
        column = row["column"]
        cells.append(
            "skipped (dense row)" if column is None else _cell(column[0].num_colors, column[1])
        )
        if with_asdex:
            cells.append(_cell(*row["asdex star"]))
            asdex_column = row["asdex column"]
            cells.append("skipped (dense row)" if asdex_column is None else _cell(*asdex_column))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Problems of benchmarks/problems.py where acyclic colorings need fewer colors than star.
STEADY_PROBLEMS = (
    "GENROSE",
    "PENTADIAG",
    "BAND9",
    "CLPLATEA",
    "FMINSRF2",
    "WOODS",
    "RANDSP2",
    "RANDSP8",
    "SPARSINE",
    "BDQRTIC",
    "ARROW2",
)


# --steady's loop regime: before each timed call, an untimed host step reads this many
# bytes (the 32 MiB of this machine's last-level cache).
LOOP_STEP_BYTES = 32 * 2**20


# Problems for --accuracy: those of STEADY_PROBLEMS plus the ones with dense rows.
ACCURACY_PROBLEMS = (*STEADY_PROBLEMS[:7], "BDQRTIC", "ARROW2", "SPARSINE")


def _scipy(matrix):
    """A 2-D BCOO as a scipy CSR array (duplicates summed)."""
    import scipy.sparse as sp

    coords = np.asarray(matrix.indices).T
    return sp.coo_array((np.asarray(matrix.data), tuple(coords)), shape=matrix.shape).tocsr()


def _check_against(reference, results: dict) -> None:
    """Every scipy array of ``results`` equals the BCOO ``reference`` to 1e-8 of its scale.

    Sparse: a dense reference needs 80 GB at n = 1e5.
    """
    expected = _scipy(reference)
    scale = 1.0 + abs(expected).max()
    for key, got in results.items():
        assert abs(got - expected).max() <= 1e-8 * scale, key


def _calls_per_round(calls: dict) -> int:
    """Timed calls per round: about 0.3 s of the slowest of ``calls``, 1 to 15."""
    from benchmarks.bench_hessian import once

    slowest = max(once(call) for call in calls.values())
    return max(1, min(15, int(0.3 / max(slowest, 1e-6))))


def steady(names, n, count=5):
    """Jitted whole sparse Hessians, steady state: lazyhess against asdex, one process.

    ``jax.jit(lazyhess.sparse_hessian(f, x))`` ("ours": of the direct and the acyclic
    coloring, the program that ran faster at its first call; the cell names the one
    ``whole=True``'s model picks) and the same with a star and an acyclic coloring against
    ``jax.jit(asdex.hessian(f, x))``, in ``count`` alternating rounds per problem: each
    round's median per contender, then the best and the median of the rounds. Colors:
    lazyhess star, column (largest-first; skipped with a dense row), acyclic, and asdex's
    star coloring.

    Two regimes: calls back to back, and calls in a loop, where each call follows an
    untimed host step that reads ``LOOP_STEP_BYTES`` (an optimiser's solve between two
    Hessians stands in for it). Back to back, a program whose working set stays in cache
    from its last call gains most; in a loop every contender starts from caches that other
    work filled, as in the first call's race (``fastest_of``: candidates alternate call by
    call).
    """
    import asdex
    import jax

    from benchmarks.bench_hessian import fmt, rounds
    from benchmarks.problems import PROBLEMS

    head = ["problem", "n", "colors: star / column / acyclic / asdex", "ours (model's coloring)"]
    head += ["ours star", "ours acyclic", "asdex", "ours / asdex: best, median"]
    head += ["in a loop: ours, asdex", "in a loop: ours / asdex: best, median"]
    step = np.ones(LOOP_STEP_BYTES // 8)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        f, x = PROBLEMS[name].make(n)
        pattern = lazyhess.hessian_sparsity(f, x)
        colorings = {
            method: lazyhess.hessian_coloring(f, x, method=method)
            for method in ("star", "acyclic")
        }
        ours = lazyhess.sparse_hessian(f, x)
        chosen = lazyhess.hessian_coloring(f, x, whole=True).method
        column = "—"
        if np.diff(pattern.indptr).max() <= COLUMN_ROW_LIMIT:
            column = str(
                lazyhess.hessian_coloring_from_sparsity(
                    pattern, "column", "largest_first"
                ).num_colors
            )
        fns = {"asdex": jax.jit(asdex.hessian(f, x))}
        for method, colored in colorings.items():
            fns[method] = jax.jit(
                lazyhess.sparse_hessian_from_coloring(f, colored, sample_args=(x,))
            )
        fns["ours"] = jax.jit(ours)
        _check_against(fns["asdex"](x), {key: _scipy(fn(x)) for key, fn in fns.items()})
        calls = {key: (lambda fn=fn, x=x: fn(x).data) for key, fn in fns.items()}
        repeat = _calls_per_round(calls)
        times = rounds(calls, count, repeat)
        best = {key: min(t) for key, t in times.items()}
        median = {key: float(np.median(t)) for key, t in times.items()}
        pair = {key: calls[key] for key in ("ours", "asdex")}
        looped = rounds(pair, count, repeat, between=step.sum)
        a_colors = asdex.hessian_coloring(f, x).num_colors
        counts = [str(colorings["star"].num_colors), column]
        counts += [str(colorings["acyclic"].num_colors), str(a_colors)]
        cells = [name, str(x.size), " / ".join(counts)]
        cells.append(f"{fmt(best['ours'])} (model: {chosen})")
        cells += [fmt(best["star"]), fmt(best["acyclic"]), fmt(best["asdex"])]
        ratio_best = best["ours"] / best["asdex"]
        ratio_median = median["ours"] / median["asdex"]
        cells.append(f"{ratio_best:.2f}x, {ratio_median:.2f}x")
        loop_best = {key: min(t) for key, t in looped.items()}
        loop_median = {key: float(np.median(t)) for key, t in looped.items()}
        cells.append(f"{fmt(loop_best['ours'])}, {fmt(loop_best['asdex'])}")
        cells.append(
            f"{loop_best['ours'] / loop_best['asdex']:.2f}x, "
            f"{loop_median['ours'] / loop_median['asdex']:.2f}x"
        )
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def floors(names, n, count=5):
    """What a whole Hessian's parts cost alone, against asdex's whole program, one process.

    Per problem, in ``count`` alternating rounds: ``jax.jit(asdex.hessian(f, x))``, ours
    (as in :func:`steady`), and the parts of our programs compiled alone: the HVPs of
    the star and of the acyclic coloring (``B``, vmapped and ``lax.map``-ped: the faster
    counts), the acyclic recovery on a concrete ``B``, and a jitted ``2 * x`` (one call's
    dispatch, counted once when two parts are added up). An acyclic program costs at least
    its HVPs and its recovery, so "acyclic HVPs + recovery" bounds it from below up to
    what XLA gains by running them in one program; the star program's HVPs bound it the
    same way, and where its recovery fuses with the HVPs it is asdex's program.
    Ratios are of best rounds.
    """
    import asdex
    import jax

    from benchmarks.bench_hessian import fmt, rounds
    from benchmarks.problems import PROBLEMS

    head = ["problem", "n", "colors: star / acyclic", "asdex", "ours / asdex"]
    head += ["star HVPs alone / asdex", "acyclic HVPs alone / asdex"]
    head += ["acyclic recovery alone / asdex", "acyclic HVPs + recovery / asdex"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        f, x = PROBLEMS[name].make(n)
        grad = jax.grad(f)

        def hvps(x, seeds, grad=grad):
            return jax.vmap(lambda s: jax.jvp(grad, (x,), (s,))[1])(seeds)

        def mapped(x, seeds, grad=grad):
            return jax.lax.map(lambda s: jax.jvp(grad, (x,), (s,))[1], seeds)

        calls = {}
        colorings = {}
        for method in ("star", "acyclic"):
            colored = colorings[method] = lazyhess.hessian_coloring(f, x, method=method)
            seeds = np.asarray(colored.seeds(x.dtype))  # constants, as in our programs
            for way, body in (("vmap", hvps), ("map", mapped)):
                fn = jax.jit(lambda x, body=body, seeds=seeds: body(x, seeds))
                calls[f"{method} {way}"] = lambda fn=fn, x=x: fn(x)
        compressed = calls["acyclic vmap"]()
        recovery = jax.jit(colorings["acyclic"].decompress_data)
        calls["recovery"] = lambda fn=recovery, b=compressed: fn(b)
        whole = {
            "asdex": jax.jit(asdex.hessian(f, x)),
            "ours": jax.jit(lazyhess.sparse_hessian(f, x)),
        }
        for key, fn in whole.items():
            calls[key] = lambda fn=fn, x=x: fn(x).data
        recovered = colorings["acyclic"].decompress(np.asarray(compressed), "csr")
        _check_against(
            whole["asdex"](x), {"ours": _scipy(whole["ours"](x)), "recovery": recovered}
        )
        double = jax.jit(lambda x: 2 * x)
        calls["call"] = lambda fn=double, x=x: fn(x)
        for call in calls.values():
            jax.block_until_ready(call())
        best = {key: min(t) for key, t in rounds(calls, count, _calls_per_round(calls)).items()}
        asdex_time = best["asdex"]
        alone = {m: min(best[f"{m} vmap"], best[f"{m} map"]) for m in colorings}
        parts = alone["acyclic"] + best["recovery"] - best["call"]
        cells = [name, str(x.size)]
        cells.append(f"{colorings['star'].num_colors} / {colorings['acyclic'].num_colors}")
        cells.append(fmt(asdex_time))
        cells += [
            f"{t / asdex_time:.2f}x"
            for t in (best["ours"], alone["star"], alone["acyclic"], best["recovery"], parts)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def accuracy(names, n):
    """Float32 errors of whole Hessians, relative to the largest entry of the float64 one.

    ``B`` is computed in float32 (one jitted HVP per color); entries are recovered from it
    directly (star) or by substitution, on the host (sequential loop) and under jit
    (prefix sum). Errors are ``max |H32 - H64| / max |H64|`` over the pattern's entries.
    """
    import jax
    import jax.numpy as jnp

    from benchmarks.problems import PROBLEMS

    jax.config.update("jax_enable_x64", True)
    head = ["problem", "n", "star", "acyclic, host", "acyclic, jit"]
    head += ["acyclic jit, entrywise (entries >= 1e-3 max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        f, x = PROBLEMS[name].make(n)
        x = x + 0.1 * jnp.sin(jnp.arange(x.size))  # off the start point's round values
        star = lazyhess.hessian_coloring(f, x, method="star")
        acyclic = lazyhess.hessian_coloring(f, x, method="acyclic")

        def compressed(colored, dtype, f=f, x=x):
            z = x.astype(dtype)
            hvp = jax.vmap(lambda s: jax.jvp(jax.grad(f), (z,), (s,))[1])
            return jax.jit(hvp)(jnp.asarray(colored.seeds(dtype)))

        exact = np.asarray(star.decompress_data(np.asarray(compressed(star, np.float64))))
        reference = exact[star.entry_index(acyclic.rows, acyclic.cols)]
        scale = np.abs(exact).max()
        B_star, B_acyclic = compressed(star, np.float32), compressed(acyclic, np.float32)
        star_values = np.asarray(star.decompress_data(np.asarray(B_star)), np.float64)
        host = np.asarray(acyclic.decompress_data(np.asarray(B_acyclic)), np.float64)
        jit = np.asarray(jax.jit(acyclic.decompress_data)(B_acyclic), np.float64)
        big = np.abs(reference) >= 1e-3 * scale
        cells = [name, str(x.size), f"{np.abs(star_values - exact).max() / scale:.1e}"]
        cells += [f"{np.abs(v - reference).max() / scale:.1e}" for v in (host, jit)]
        entrywise = np.abs(jit - reference)[big] / np.abs(reference[big])
        cells.append(f"{entrywise.max():.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-asdex", action="store_true")
    parser.add_argument("--no-1e6", action="store_true", help="skip the n = 1e6 banded row")
    parser.add_argument(
        "--steady",
        type=int,
        metavar="N",
        help="instead: jitted whole-Hessian steady state against asdex at size N",
    )
    parser.add_argument(
        "--problems",
        nargs="+",
        default=list(STEADY_PROBLEMS),
        help="with --steady or --floor: the problems (default: where acyclic drops colors)",
    )
    parser.add_argument(
        "--floor",
        type=int,
        metavar="N",
        help="instead: the cost of HVPs and recovery alone against asdex at size N",
    )
    parser.add_argument("--rounds", type=int, default=5, help="with --steady or --floor: rounds")
    parser.add_argument(
        "--accuracy",
        type=int,
        metavar="N",
        help="instead: float32 errors of star and acyclic recovery at size N",
    )
    args = parser.parse_args()
    if args.accuracy:
        print(accuracy(ACCURACY_PROBLEMS, args.accuracy))
        return
    if args.steady:
        print(steady(args.problems, args.steady, args.rounds))
        return
    if args.floor:
        print(floors(args.problems, args.floor, args.rounds))
        return
    # Warm up numba's compiled kernels (loaded from its cache or compiled) outside timings.
    lazyhess.hessian_coloring_from_sparsity(grid9(100))
    rows = run(PATTERNS, args.sizes, args.repeats, not args.no_asdex)
    if not args.no_1e6:
        rows += run(BANDED_1E6, [1_000_000], max(1, args.repeats // 2), not args.no_asdex)
    print(table(rows))


if __name__ == "__main__":
    main()
