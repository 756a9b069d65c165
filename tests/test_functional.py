"""The asdex-style functional API: jit-able sparse Hessians from a coloring."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyhess
from benchmarks.problems import PROBLEMS
from lazyhess._hvp import RACE_MAX_ROUNDS, RACE_ROUNDS, RACE_SWITCH_SHARE, fastest_of


@pytest.fixture(scope="module", params=["GENROSE", "ARWHEAD", "CLPLATEA", "SPARSINE"])
def problem(request):
    f, x = PROBLEMS[request.param].make(64)
    x = x + 0.1 * jax.random.normal(jax.random.PRNGKey(0), x.shape)
    return f, x, np.asarray(jax.jit(jax.hessian(f))(x))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_fwd", "rev_over_rev"])
def test_sparse_hessian_matches_jax_under_jit(problem, mode):
    f, x, ref = problem
    hess = jax.jit(lazyhess.sparse_hessian(f, x, mode=mode))
    np.testing.assert_allclose(hess(x).todense(), ref, rtol=1e-10, atol=1e-8)
    dense = jax.jit(
        lazyhess.sparse_hessian(f, x, output_format="dense", symmetric=False, chunk_size=2)
    )
    np.testing.assert_allclose(dense(x), ref, rtol=1e-10, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("format", ["numpy", "csr", "csc", "coo", "scipy_csr", "numpy_dense"])
def test_host_formats(problem, format):
    f, x, ref = problem
    out = lazyhess.sparse_hessian(f, x, output_format=format)(x)
    np.testing.assert_allclose(
        out if isinstance(out, np.ndarray) else out.toarray(), ref, rtol=1e-10, atol=1e-8
    )


@pytest.mark.slow
def test_value_and_compressed_and_decompress(problem):
    f, x, ref = problem
    value, H = jax.jit(lazyhess.value_and_sparse_hessian(f, x, output_format="dense"))(x)
    np.testing.assert_allclose(value, f(x), rtol=1e-12)
    np.testing.assert_allclose(H, ref, rtol=1e-10, atol=1e-8)
    compressed = lazyhess.compressed_hessian(f, x)
    B = jax.jit(compressed)(x)
    coloring = compressed.coloring
    assert B.shape == (coloring.num_colors, x.size)
    np.testing.assert_allclose(B, coloring.seeds() @ ref, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(
        lazyhess.decompress(B, coloring, "numpy"), ref, rtol=1e-10, atol=1e-8
    )
    data = jax.jit(lazyhess.decompress_data, static_argnums=1)(B, coloring)
    np.testing.assert_allclose(data, ref[coloring.rows, coloring.cols], rtol=1e-10, atol=1e-8)


@pytest.mark.slow
def test_from_coloring_with_aux_and_gradients():
    def f(x):
        return jnp.sum(x[1:] ** 2 * x[:-1] ** 2) + jnp.sum(jnp.sin(x)), {"s": jnp.sum(x)}

    x = jnp.linspace(0.1, 1.0, 9)
    coloring = lazyhess.hessian_coloring(f, x, has_aux=True)
    hess = jax.jit(lazyhess.sparse_hessian_from_coloring(f, coloring, "dense", has_aux=True))
    H, aux = hess(x)
    np.testing.assert_allclose(H, jax.jit(jax.hessian(lambda z: f(z)[0]))(x), rtol=1e-12)
    np.testing.assert_allclose(aux["s"], jnp.sum(x))
    third = jax.grad(lambda z: hess(z)[0][2, 3])(x)
    np.testing.assert_allclose(
        third, jax.jit(jax.grad(lambda z: jax.hessian(lambda w: f(w)[0])(z)[2, 3]))(x), rtol=1e-10
    )


@pytest.mark.slow
def test_check_hessian_correctness(problem):
    f, x, _ = problem
    coloring = lazyhess.hessian_coloring(f, x)
    lazyhess.check_hessian_correctness(f, x, coloring)
    lazyhess.check_hessian_correctness(f, x, coloring, method="dense")
    wrong = lazyhess.hessian_coloring_from_sparsity(np.eye(x.size, dtype=bool))
    with pytest.raises(lazyhess.VerificationError, match="does not fit fun"):
        lazyhess.check_hessian_correctness(f, x, wrong)
    with pytest.raises(lazyhess.VerificationError):
        lazyhess.check_hessian_correctness(f, x, wrong, method="dense")


def test_functional_errors():
    f, x = PROBLEMS["GENROSE"].make(8)
    with pytest.raises(ValueError, match="valid format"):
        lazyhess.sparse_hessian(f, x, output_format="lil")
    with pytest.raises(TypeError, match="ColoredPattern"):
        lazyhess.sparse_hessian_from_coloring(f, np.eye(8), sample_args=(x,))
    diagonal = lazyhess.hessian_coloring_from_sparsity(np.eye(8, dtype=bool), method="diagonal")
    with pytest.raises(ValueError, match="diagonal"):
        lazyhess.sparse_hessian_from_coloring(f, diagonal, sample_args=(x,))
    with pytest.raises(ValueError, match="scalar output"):
        lazyhess.sparse_hessian(lambda z: z**2, x)(x)
    with pytest.raises(ValueError, match="method="):
        lazyhess.check_hessian_correctness(f, x, lazyhess.hessian_coloring(f, x), method="exact")


def test_coloring_refuses_other_shapes_and_dtypes():
    # Issue 11: a coloring for shape (2, 3) used to accept (6,) and give wrong values.
    def f(x):
        return jnp.sum(x[:, 1:] * x[:, :-1] ** 2) + x[0, 0] * x[1, 2]

    x = jnp.linspace(0.5, 1.5, 6).reshape(2, 3)
    coloring = lazyhess.hessian_coloring(f, x)
    assert coloring.argnums == 0 and coloring.inputs.shape == (2, 3)
    hess = lazyhess.sparse_hessian_from_coloring(f, coloring, "dense")
    np.testing.assert_allclose(hess(x), jax.jit(jax.hessian(f))(x).reshape(6, 6), rtol=1e-12)
    flat = lambda z: f(z.reshape(2, 3))  # noqa: E731
    with pytest.raises(ValueError, match=r"shape \(2, 3\) .* passes shape \(6,\)"):
        lazyhess.sparse_hessian_from_coloring(flat, coloring, "dense")(x.reshape(6))
    with pytest.raises(ValueError, match="dtype float32"):
        hess(x.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        lazyhess.sparse_hessian_from_coloring(f, coloring, sample_args=(jnp.ones((3, 2)),))


@pytest.mark.slow
def test_coloring_carries_argnums_and_mode():
    def f(x, y):
        return jnp.sum(x * y**2) + jnp.sum(jnp.sin(y[1:] * y[:-1]))

    x, y = jnp.linspace(0.1, 0.5, 4), jnp.linspace(-1.0, 1.0, 4)
    coloring = lazyhess.hessian_coloring(f, x, y, argnums=(0, 1))
    coloring.mode = "rev_over_rev"
    dense = lazyhess.sparse_hessian_from_coloring(f, coloring, "dense")(x, y)
    blocks = jax.jit(jax.hessian(f, argnums=(0, 1)))(x, y)
    np.testing.assert_allclose(dense, np.block([[b for b in row] for row in blocks]), rtol=1e-12)
    with pytest.raises(ValueError, match="built for argnums=\\(0, 1\\)"):
        lazyhess.sparse_hessian_from_coloring(f, coloring, argnums=1)
    lazyhess.check_hessian_correctness(f, (x, y), coloring)
    lazyhess.check_hessian_correctness(f, (x, y), coloring, method="dense")


@pytest.mark.parametrize("shape", [(1,), (1, 1)])
def test_one_element_outputs_are_squeezed(shape):
    f, x = PROBLEMS["GENROSE"].make(8)
    g = lambda z: f(z).reshape(shape)  # noqa: E731
    value, H = lazyhess.value_and_sparse_hessian(g, x, output_format="dense")(x)
    assert value.shape == ()
    np.testing.assert_allclose(H, jax.jit(jax.hessian(f))(x), rtol=1e-12)


def test_non_array_aux_and_compressed_aux():
    def f(x):
        return jnp.sum(x[1:] ** 2 * x[:-1]), ("label", {"norm": jnp.sum(x**2), "k": 3})

    x = jnp.linspace(0.1, 1.0, 6)
    reference = jax.jit(jax.hessian(lambda z: f(z)[0]))(x)
    H, (label, rest) = lazyhess.sparse_hessian(f, x, has_aux=True, output_format="dense")(x)
    np.testing.assert_allclose(H, reference, rtol=1e-12)
    assert label == "label" and rest["k"] == 3
    np.testing.assert_allclose(rest["norm"], jnp.sum(x**2))
    compressed = lazyhess.compressed_hessian(f, x, has_aux=True)
    B, (label, rest) = compressed(x)
    assert label == "label" and B.shape == (compressed.coloring.num_colors, x.size)
    np.testing.assert_allclose(lazyhess.decompress(B, compressed.coloring, "dense"), reference)


@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_fwd", "rev_over_rev"])
def test_value_and_sparse_hessian_traces_fun_once(mode):
    traces = []

    def f(x):
        traces.append(1)
        return jnp.sum(x[1:] ** 2 * x[:-1]) + jnp.sum(jnp.cos(x))

    x = jnp.linspace(0.1, 1.0, 6)
    value_and_hess = lazyhess.value_and_sparse_hessian(f, x, mode=mode, chunk_size=2)
    # A tridiagonal: star (3 colors) and acyclic (2) are both timed, each program once:
    # its seeds vmapped and, on CPU, one after another (lax.map).
    colorings = len(lazyhess.coloring.whole_candidates(lazyhess.hessian_coloring(f, x)))
    assert colorings == 2
    programs = colorings * (2 if jax.default_backend() == "cpu" else 1)
    traces.clear()
    value, H = value_and_hess(x)
    assert len(traces) == programs
    value_and_hess(x + 1.0)
    assert len(traces) == programs
    np.testing.assert_allclose(value, f(x), rtol=1e-12)
    np.testing.assert_allclose(H.todense(), jax.jit(jax.hessian(f))(x), rtol=1e-12)
    traces.clear()
    jax.jit(value_and_hess)(x)
    assert len(traces) <= 1  # the compiled program's trace may be reused


@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_fwd", "rev_over_rev"])
def test_value_and_aux_in_every_mode_and_chunking(mode):
    def f(x):
        return jnp.sum(x**3 * x[::-1]), {"first": x[0], "tag": "t"}

    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    reference = jax.jit(jax.hessian(lambda z: f(z)[0]))(x)
    for chunk_size in (None, 1):
        value_and_hess = lazyhess.value_and_sparse_hessian(
            f, x, has_aux=True, mode=mode, chunk_size=chunk_size, output_format="dense"
        )
        (value, aux), H = value_and_hess(x)
        np.testing.assert_allclose(value, f(x)[0], rtol=1e-12)
        assert aux["first"] == 1.0 and aux["tag"] == "t"
        np.testing.assert_allclose(H, reference, rtol=1e-12)


def test_saved_coloring_keeps_what_it_was_built_for(tmp_path):
    def f(p, y):
        return jnp.sum(p["w"] ** 2 * y[:2]) + jnp.sum(p["b"][0] ** 3) + jnp.sum(y**3)

    p = {"w": jnp.ones(2), "b": [jnp.ones((2, 2))]}
    y = jnp.linspace(0.5, 1.0, 3)
    coloring = lazyhess.hessian_coloring(f, p, y, argnums=(0, 1))
    coloring.mode = "rev_over_rev"
    coloring.save(tmp_path / "c.npz")
    loaded = lazyhess.ColoredPattern.load(tmp_path / "c.npz")
    assert (loaded.argnums, loaded.mode) == ((0, 1), "rev_over_rev")
    assert jax.tree_util.tree_structure(loaded.inputs) == jax.tree_util.tree_structure(
        coloring.inputs
    )
    assert jax.tree_util.tree_leaves(loaded.inputs) == jax.tree_util.tree_leaves(coloring.inputs)
    dense = lazyhess.sparse_hessian_from_coloring(f, loaded, "dense")(p, y)
    np.testing.assert_allclose(
        dense, lazyhess.sparse_hessian_from_coloring(f, coloring, "dense")(p, y)
    )
    with pytest.raises(ValueError, match="structured as"):
        lazyhess.sparse_hessian_from_coloring(f, loaded)(
            {"w": jnp.ones(2), "b": jnp.ones((2, 2))}, y
        )


def test_whole_candidates_are_direct_and_fewer_acyclic_colors_model_first():
    for name, model in (("BAND9", "acyclic"), ("PENTADIAG", "star")):
        f, x = PROBLEMS[name].make(200)
        direct = lazyhess.hessian_coloring(f, x)
        candidates = lazyhess.coloring.whole_candidates(direct)
        assert [c.method for c in candidates] == sorted(
            ["star", "acyclic"], key=lambda m: m != model
        )
        assert direct in candidates
        acyclic = next(c for c in candidates if c.method == "acyclic")
        assert acyclic.num_colors < direct.num_colors
        assert candidates[0].method == lazyhess.hessian_coloring(f, x, whole=True).method
    f, x = PROBLEMS["ARWHEAD"].make(200)  # star: 2 colors, acyclic cannot do with fewer
    direct = lazyhess.hessian_coloring(f, x)
    assert lazyhess.coloring.whole_candidates(direct) == [direct]


@pytest.mark.parametrize("faster", ["star", "acyclic"])
@pytest.mark.parametrize("problem", ["BAND9", "PENTADIAG"])  # the model: acyclic, star
@pytest.mark.parametrize("factory", ["sparse_hessian", "value_and_sparse_hessian"])
def test_whole_hessian_programs_keep_the_coloring_that_ran_faster(
    monkeypatch, faster, problem, factory
):
    # Both colorings are raced whichever the model prefers. The one that must lose sleeps
    # 5 ms per run (a program here takes well under 1 ms); which program serves is seen by
    # its coloring.
    f, x = PROBLEMS[problem].make(200)
    used = []
    candidates = lazyhess._functional.Program.candidates

    def slowed(program, args, kwargs):
        ways = candidates(program, args, kwargs)
        if program.coloring.method == faster:
            return ways

        def slow(run):
            def call():
                time.sleep(0.005)
                return run()

            return call

        return [(way, slow(run)) for way, run in ways]

    decompress = lazyhess._functional.Program.decompress

    def recorded(program, point, format):
        used.append(program.coloring.method)
        return decompress(program, point, format)

    monkeypatch.setattr(lazyhess._functional.Program, "candidates", slowed)
    monkeypatch.setattr(lazyhess._functional.Program, "decompress", recorded)
    hess = getattr(lazyhess, factory)(f, x)
    reference = jax.hessian(f)(x)
    for point in (x, x + 0.5):
        out = hess(point)
        H = out[1] if factory == "value_and_sparse_hessian" else out
        np.testing.assert_allclose(H.todense(), jax.hessian(f)(point), rtol=1e-10, atol=1e-10)
    jitted = jax.jit(hess)(x)
    H = jitted[1] if factory == "value_and_sparse_hessian" else jitted
    np.testing.assert_allclose(H.todense(), reference, rtol=1e-10, atol=1e-10)
    assert used == [faster] * 3


def test_whole_hessian_choice_waits_for_concrete_arguments(monkeypatch):
    f, x = PROBLEMS["BAND9"].make(200)
    asked = []
    candidates = lazyhess._functional.Program.candidates

    def recorded(program, args, kwargs):
        asked.append(candidates(program, args, kwargs))
        return asked[-1]

    monkeypatch.setattr(lazyhess._functional.Program, "candidates", recorded)
    shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
    hess = lazyhess.sparse_hessian(f, shape)  # no concrete sample: nothing to time with
    reference = jax.hessian(f)(x)
    np.testing.assert_allclose(jax.jit(hess)(x).todense(), reference, rtol=1e-10, atol=1e-10)
    # traced: the race, then the model's program for its own ways, both undecided
    assert asked == [None, None]
    np.testing.assert_allclose(hess(x).todense(), reference, rtol=1e-10, atol=1e-10)
    # both colorings' ways, raced at once; the winner keeps its way
    assert len(asked) == 4
    assert all(ways and all(callable(run) for _, run in ways) for ways in asked[2:])
    hess(x + 1.0)
    assert len(asked) == 4  # decided once


def test_fastest_of_keeps_the_fastest_run_and_races_in_rounds():
    calls = []

    def run(i, seconds):
        def call():
            calls.append(i)
            time.sleep(seconds)
            return jnp.zeros(())

        return call

    assert fastest_of([run(0, 0.004), run(1, 0.001), run(2, 0.003)]) == 1
    # one compiling call each, then alternating rounds: at least RACE_ROUNDS, at most
    # RACE_MAX_ROUNDS
    assert calls[:3] == [0, 1, 2]
    rounds = len(calls) // 3 - 1
    assert len(calls) % 3 == 0 and RACE_ROUNDS <= rounds <= RACE_MAX_ROUNDS
    assert calls[3:] == [0, 1, 2] * rounds


def test_fastest_of_goes_by_the_typical_run_not_a_rare_fast_one():
    calls = {0: 0, 1: 0}

    def run(i):
        def call():
            calls[i] += 1
            # 0: usually 4 ms, one call in five 0.5 ms; 1: always 2 ms.
            seconds = (0.0005 if calls[i] % 5 == 0 else 0.004) if i == 0 else 0.002
            time.sleep(seconds)
            return jnp.zeros(())

        return call

    assert fastest_of([run(0), run(1)]) == 1


def test_fastest_of_warms_up_untimed_first():
    # 0 runs 5 ms for its first 12 calls, then 1 ms; 1 always runs 2 ms. Timed from the
    # start, 0's slow calls lose the race; after the warm-up, 0 wins.
    def race(warmup):
        calls = {0: 0, 1: 0}

        def run(i):
            def call():
                calls[i] += 1
                time.sleep(0.002 if i == 1 else 0.005 if calls[i] <= 12 else 0.001)
                return jnp.zeros(())

            return call

        return fastest_of([run(0), run(1)], warmup=warmup)

    assert race(0.0) == 1
    assert race(0.1) == 0


def test_fastest_of_keeps_its_incumbent_unless_beaten_in_most_rounds(monkeypatch):
    # 1's median (1 ms) beats the incumbent's (2 ms), but it runs 3 ms one call in
    # three: it wins two rounds of three, short of RACE_SWITCH_SHARE. 2 always runs
    # 0.5 ms. A longer race makes the shares steady.
    monkeypatch.setattr(lazyhess._hvp, "RACE_SECONDS", 0.1)

    def run(i):
        calls = [0]

        def call():
            calls[0] += 1
            slow = i == 1 and calls[0] % 3 == 0
            time.sleep((0.002, 0.003 if slow else 0.001, 0.0005)[i])
            return jnp.zeros(())

        return call

    assert RACE_SWITCH_SHARE > 2 / 3
    assert fastest_of([run(0), run(1)]) == 1
    assert fastest_of([run(0), run(1)], incumbent=0) == 0
    assert fastest_of([run(0), run(2)], incumbent=0) == 1
    assert fastest_of([run(0), run(1), run(2)], incumbent=0) == 2


def test_whole_hessian_programs_race_every_coloring_and_way_at_once(monkeypatch):
    f, x = PROBLEMS["BAND9"].make(200)
    raced = []

    def last(runs, warmup, incumbent):
        raced.append((len(runs), warmup, incumbent))
        return len(runs) - 1

    monkeypatch.setattr(lazyhess._functional, "fastest_of", last)
    decompress = lazyhess._functional.Program.decompress
    used = []

    def recorded(program, point, format):
        used.append((program.coloring.method, program._way))
        return decompress(program, point, format)

    monkeypatch.setattr(lazyhess._functional.Program, "decompress", recorded)
    hess = lazyhess.sparse_hessian(f, x)
    np.testing.assert_allclose(hess(x).todense(), jax.hessian(f)(x), rtol=1e-10, atol=1e-10)
    ways = 3 if jax.default_backend() == "cpu" else 2
    # one race of all; the incumbent is star's vmapped fused way, after the model's
    # acyclic program's ways
    assert raced == [(2 * ways, lazyhess._hvp.RACE_WARMUP, ways)]
    # the model's acyclic program first, then star's ways: the last is star's last way
    assert used == [("star", (True, False) if ways == 3 else (False, True))]


def test_whole_hessian_choice_inside_a_trace_runs_concretely(monkeypatch):
    # jax.jit(hess) with a concrete sample decides while tracing: the raced runs must
    # execute, not be staged into the caller's trace (which made them ~20x slower).
    f, x = PROBLEMS["BAND9"].make(200)
    results = []
    candidates = lazyhess._functional.Program.candidates

    def recorded(program, args, kwargs):
        def spied(run):
            def call():
                results.append(run())
                return results[-1]

            return call

        return [(way, spied(run)) for way, run in candidates(program, args, kwargs)]

    monkeypatch.setattr(lazyhess._functional.Program, "candidates", recorded)
    hess = lazyhess.sparse_hessian(f, x)
    out = jax.jit(hess)(x + 0.5)
    np.testing.assert_allclose(out.todense(), jax.hessian(f)(x + 0.5), rtol=1e-10, atol=1e-10)
    assert len(results) >= 2 * (1 + RACE_ROUNDS)
    assert not any(isinstance(r, jax.core.Tracer) for r in results)
    np.testing.assert_allclose(np.asarray(results[0]), np.asarray(results[-2]), rtol=1e-10)
