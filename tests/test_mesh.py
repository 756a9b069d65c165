"""Seed directions sharded over a mesh: every request kind equals jax.hessian.

Simulated devices need XLA_FLAGS before JAX starts, so the checks run in fresh
interpreters with 8 CPU devices (``helpers.run_fresh``), each over the whole matrix: auto
and explicit axes, x replicated and sharded, with and without ``mesh=``, eager and under
``jax.jit``, the three modes in turn. Each takes tens of seconds, so they are marked slow.
"""

import re
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from helpers import ROOT, fresh_env, run_fresh

import lazyhess
from lazyhess._mesh import Placement, chunk_budget

PRELUDE = textwrap.dedent(
    """
    import sys
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import lazyhess

    warnings.simplefilter("error")
    assert jax.device_count() == 8 and jax.config.jax_enable_x64
    n = 64


    def f(x):
        # Works with x sharded over explicit axes (no slices that split a shard unevenly).
        y = x.reshape(n // 2, 2)
        pairs = jnp.sum((y[:, 0] * y[:, 1] - 1.0) ** 2)
        return jnp.sum(jnp.sin(x) * x**2) + pairs + jnp.sum(x.reshape(16, 4)[:, 0]) ** 2


    # The axis types to cover: the script's arguments (a test per type runs in parallel).
    KINDS = tuple(getattr(AxisType, name) for name in sys.argv[1:]) or (
        AxisType.Auto,
        AxisType.Explicit,
    )
    x0 = np.random.default_rng(0).normal(size=n)
    ref = np.asarray(jax.hessian(f)(x0))


    def cases():
        \"\"\"(label, mesh, x, mesh= argument, jit, mode) over the matrix, modes in turn.\"\"\"
        modes = ("fwd_over_rev", "rev_over_fwd", "rev_over_rev")
        count = 0
        for kind in KINDS:
            mesh = jax.make_mesh((8,), ("dirs",), axis_types=(kind,))
            for spec in (P(), P("dirs")):
                x = jax.device_put(x0, NamedSharding(mesh, spec))
                for given in (None, mesh):
                    for jit in (False, True):
                        mode = modes[count % 3]
                        count += 1
                        label = (kind.name, str(spec), given is not None, jit, mode)
                        yield label, mesh, x, given, jit, mode


    def check(label, got, want):
        try:
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None
    """
)

LAZY = PRELUDE + textwrap.dedent(
    """
    v = np.random.default_rng(1).normal(size=n)
    requests = {
        "row": (lambda H: H[3], ref[3]),
        "block": (lambda H: H[2:5, 1:7], ref[2:5, 1:7]),
        "entry": (lambda H: H[3, 2], ref[3, 2]),
        "diagonal": (lambda H: H.diagonal(), np.diag(ref)),
        "all": (lambda H: H[:], ref),
        "to_sparse": (lambda H: H.to_sparse("bcoo").todense(), ref),
        "matvec": (lambda H: H @ jnp.asarray(v), ref @ v),
    }
    for label, mesh, x, given, jit, mode in cases():
        options = dict(mesh=given, chunk_size=2, mode=mode)
        for name, (request, want) in requests.items():

            def run(z):
                return request(lazyhess.hessian(f, z, **options))

            with jax.set_mesh(mesh):
                check(label + (name,), (jax.jit(run) if jit else run)(x), want)
        if not jit:
            # Laziness holds on a mesh: a row is one direction, the pattern's colors the rest.
            with jax.set_mesh(mesh):
                H = lazyhess.hessian(f, x, **options)
                H[3]
                assert H.cache_info().hvps == 1, (label, H.cache_info())
                row = H[3]
                assert H.cache_info().hvps == 1, (label, H.cache_info())
                # Results live on the point's devices, as jax.hessian's do.
                for got in (row, H[3, 2], H[:4]):
                    assert got.sharding.device_set == set(mesh.devices.flat), (label, got)


    def chained(v):
        # A chain across blocks: each block's last element meets the next block's first.
        right = jax.lax.ppermute(v[:1], "dirs", [(i, i - 1) for i in range(1, 8)])
        ext = jnp.concatenate([v, right])
        terms = (ext[1:] - ext[:-1] ** 2) ** 2
        terms = jnp.where(jax.lax.axis_index("dirs") == 7, terms.at[-1].set(0.0), terms)
        return jax.lax.psum(jnp.sum(terms + jnp.sin(v)), "dirs")


    # A function that shards x itself (shard_map over x's explicit axis): detection traces
    # it with x's sharding type, and the tridiagonal pattern costs 3 HVPs.
    for kind in KINDS:
        mesh = jax.make_mesh((8,), ("dirs",), axis_types=(kind,))

        def g(x):
            return jax.shard_map(chained, mesh=mesh, in_specs=P("dirs"), out_specs=P())(x)

        with jax.set_mesh(mesh):
            x = jax.device_put(x0, NamedSharding(mesh, P("dirs")))
            want = np.asarray(jax.hessian(g)(x))
            H = lazyhess.hessian(g, x)
            check((kind.name, "shard_map"), H[:], want)
            assert H.cache_info().hvps == 3, H.cache_info()
            jitted = jax.jit(lambda z: lazyhess.hessian(g, z)[:])(x)
            check((kind.name, "shard_map", "jit"), jitted, want)

    # A 2-D mesh: directions over 'dirs', x keeps its sharding over 'x' (or both axes).
    for kind in KINDS:
        grid = jax.make_mesh((4, 2), ("dirs", "x"), axis_types=(kind, kind))
        options = dict(mesh=grid, seed_axis="dirs", chunk_size=1)
        hess = lazyhess.sparse_hessian(f, x0, output_format="dense", **options)
        with jax.set_mesh(grid):
            for spec in (P("x"), P(("dirs", "x"))):
                x = jax.device_put(x0, NamedSharding(grid, spec))
                label = (kind.name, "grid", str(spec))
                H = lazyhess.hessian(f, x, **options)
                check(label + ("all",), H[:], ref)
                check(label + ("matvec",), H @ jnp.asarray(v), ref @ v)
                check(label + ("sparse_hessian",), jax.jit(hess)(x), ref)

    # No jax.set_mesh context (jax.hessian itself then asks for one): x's type still says.
    mesh = jax.make_mesh((8,), ("dirs",))
    x = jax.device_put(x0, NamedSharding(mesh, P("dirs")))
    for given in (None, mesh):
        check(("no context", given is not None), lazyhess.hessian(f, x, mesh=given)[:], ref)
        hess = lazyhess.sparse_hessian(f, x0, mesh=given, output_format="dense")
        check(("no context", given is not None, "jit"), jax.jit(hess)(x), ref)
    print("ok")
    """
)

FUNCTIONAL = PRELUDE + textwrap.dedent(
    """
    for label, mesh, x, given, jit, mode in cases():
        options = dict(mesh=given, chunk_size=1, mode=mode)
        dense = lazyhess.sparse_hessian(f, x0, output_format="dense", **options)
        bcoo = lazyhess.sparse_hessian(f, x0, **options)
        both = lazyhess.value_and_sparse_hessian(f, x0, output_format="dense", **options)
        comp = lazyhess.compressed_hessian(f, x0, **options)
        coloring = comp.coloring
        requests = {
            "dense": (dense, lambda out: out),
            "bcoo": (bcoo, lambda out: out.todense()),
            "value_and": (both, lambda out: out[1]),
            "compressed": (comp, lambda out: lazyhess.decompress(out, coloring, "dense")),
        }
        for name, (fn, read) in requests.items():
            with jax.set_mesh(mesh):
                out = (jax.jit(fn) if jit else fn)(x)
                check(label + (name,), read(out), ref)
                if name == "value_and":
                    check(label + ("value",), out[0], np.asarray(f(x0)))


    def weighted(x, y):
        # A second, non-differentiated array argument and an aux, both closed over by the
        # program's shard_map.
        return f(x * y), {"total": jnp.sum(y * x)}


    y0 = np.linspace(0.5, 1.5, n)
    want = np.asarray(jax.hessian(lambda x: weighted(x, y0)[0])(x0))
    mesh = jax.make_mesh((8,), ("dirs",))
    fn = lazyhess.value_and_sparse_hessian(
        weighted, x0, y0, has_aux=True, mesh=mesh, output_format="dense"
    )
    with jax.set_mesh(mesh):
        for jit in (False, True):
            (value, aux), H = (jax.jit(fn) if jit else fn)(x0, y0)
            check(("aux", jit), H, want)
            check(("aux", jit, "value"), value, np.asarray(weighted(x0, y0)[0]))
            check(("aux", jit, "aux"), aux["total"], np.sum(y0 * x0))
    print("ok")
    """
)

HLO = PRELUDE + textwrap.dedent(
    """
    import re

    collective = re.compile(
        r"= (\\S+) (all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter)"
        r"(?:-start)?\\("
    )
    colors = lazyhess.hessian_coloring(f, x0).num_colors
    for kind in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((8,), ("dirs",), axis_types=(kind,))
        for mode in ("fwd_over_rev", "rev_over_fwd", "rev_over_rev"):
            fn = lazyhess.sparse_hessian(f, x0, mesh=mesh, mode=mode, output_format="dense")
            nnz = int(np.count_nonzero(lazyhess.hessian_sparsity(f, x0).to_dense()))
            with jax.set_mesh(mesh):
                text = jax.jit(fn).lower(x0).compile().as_text()
            # One all-reduce of the nnz values; no gather of the compressed matrix, and no
            # collective anywhere else (so none inside the HVPs).
            found = collective.findall(text)
            assert found == [(f"f64[{nnz}]{{0}}", "all-reduce")], (kind, mode, found)
            assert "num_partitions=8" in text
            # Each device evaluates its own colors: seed chunks of colors / 8 directions.
            chunks = set(re.findall(rf"f64\\[(\\d+),{n}\\]", text))
            assert str(colors // 8) in chunks and str(colors) not in chunks, (chunks, colors)
    print("ok")
    """
)


PROCESSES = textwrap.dedent(
    """
    import sys

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    address, pid = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(address, num_processes=2, process_id=pid, initialization_timeout=60)
    import lazyhess

    assert jax.device_count() == 8 and jax.local_device_count() == 4
    n = 64


    def f(x):
        y = x.reshape(n // 2, 2)
        pairs = jnp.sum((y[:, 0] * y[:, 1] - 1.0) ** 2)
        return jnp.sum(jnp.sin(x) * x**2) + pairs + jnp.sum(x.reshape(16, 4)[:, 0]) ** 2


    x0 = np.random.default_rng(0).normal(size=n)
    v = np.random.default_rng(1).normal(size=n)
    ref = np.asarray(jax.jit(jax.hessian(f), device=jax.local_devices()[0])(x0))
    mesh = jax.make_mesh((8,), ("dirs",))  # explicit axes, jax's default
    sharded = jax.make_array_from_callback((n,), NamedSharding(mesh, P("dirs")), lambda i: x0[i])
    whole = jax.make_array_from_callback((n,), NamedSharding(mesh, P()), lambda i: x0[i])


    def close(got, want):
        if not got.is_fully_addressable:
            got = multihost_utils.process_allgather(got, tiled=True)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)


    for x, given in ((sharded, None), (whole, mesh), (sharded, mesh)):
        with jax.set_mesh(mesh):
            H = lazyhess.hessian(f, x, mesh=given, chunk_size=2)
            close(H[3], ref[3])
            close(H[:], ref)
            close(H.diagonal(), np.diag(ref))
            close(H @ jnp.asarray(v), ref @ v)
            # The dense engine's whole H[:] (one compiled call over every unit seed).
            close(lazyhess.hessian(f, x, mesh=given, sparsity=None)[:], ref)
            hess = lazyhess.sparse_hessian(f, x0, mesh=given, output_format="dense")
            close(jax.jit(hess)(x), ref)
            # Process 0 decides the request; every process makes it (docs/many-devices.md).
            row = int(multihost_utils.broadcast_one_to_all(np.int64(5 if pid == 0 else 0)))
            assert row == 5
            close(H[row], ref[5])
    print("ok", pid)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_four_devices():
    # jax.distributed on loopback: every process runs the same requests (multi-controller).
    address = f"127.0.0.1:{_free_port()}"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESSES, address, str(pid)],
            cwd=ROOT,
            env=fresh_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    try:
        outputs = [run.communicate(timeout=300) for run in runs]
    finally:
        for run in runs:
            run.kill()
    for pid, (run, (out, err)) in enumerate(zip(runs, outputs, strict=True)):
        assert run.returncode == 0, out + err
        assert out.strip().endswith(f"ok {pid}"), out + err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["Auto", "Explicit"])
def test_lazy_requests_on_every_mesh(kind):
    assert run_fresh(LAZY, kind).strip().endswith("ok")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["Auto", "Explicit"])
def test_functional_on_every_mesh(kind):
    assert run_fresh(FUNCTIONAL, kind).strip().endswith("ok")


@pytest.mark.slow
def test_one_all_reduce_of_nnz_values():
    assert run_fresh(HLO).strip().endswith("ok")


def test_mesh_argument_errors():
    f = lambda x: jnp.sum(x**3)  # noqa: E731
    x = jnp.ones(4)
    mesh = jax.make_mesh((1,), ("dirs",))
    grid = jax.make_mesh((1, 1), ("dirs", "model"))
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        lazyhess.hessian(f, x, mesh="dirs")
    with pytest.raises(ValueError, match=r"seed_axis='rows' is not an axis of the mesh"):
        lazyhess.hessian(f, x, mesh=mesh, seed_axis="rows")
    with pytest.raises(ValueError, match="seed_axis='dirs' needs mesh="):
        lazyhess.sparse_hessian(f, x, seed_axis="dirs")
    with pytest.raises(ValueError, match=r"the mesh has axes \('dirs', 'model'\)"):
        lazyhess.compressed_hessian(f, x, mesh=grid)
    with pytest.raises(ValueError, match=r"the mesh has axes"):
        lazyhess.hessian(f, mesh=grid)


@pytest.mark.slow
def test_many_devices_example():
    out = run_fresh("import runpy; runpy.run_path('examples/many_devices.py')['main'](n=256)")
    assert "8 devices, mesh axis 'dirs', n = 256" in out
    assert "1 HVP(s)" in out
    difference = float(re.search(r"max \|difference\| = (\S+)", out).group(1))
    assert difference < 1e-9
    assert "1 all-reduce, 0 all-gather" in out


class _Device:
    def __init__(self, limit):
        self.limit = limit

    def memory_stats(self):
        return None if self.limit is None else {"bytes_limit": self.limit}


class _Mesh:
    def __init__(self, *limits):
        self.local_devices = [_Device(limit) for limit in limits]


def test_chunk_budget_reads_device_memory():
    default = 64 * 2**20
    assert chunk_budget(Placement(), default) == default
    # The smallest device decides; a backend that reports nothing (CPU) keeps the default.
    mesh = _Mesh(16 * 2**30, 8 * 2**30)
    assert chunk_budget(Placement(mesh, "dirs"), default) == 8 * 2**30 // 64  # type: ignore
    assert chunk_budget(Placement(_Mesh(None), "dirs"), default) == default  # type: ignore
    # Through the public surface on a one-device CPU mesh: the default chunk, per device.
    f = lambda x: jnp.sum(jnp.sin(x) ** 2)  # noqa: E731
    x = jnp.ones(1000)
    one = lazyhess.hessian(f, x, sparsity=None).cost(slice(None)).chunk_bytes
    meshed = lazyhess.hessian(f, x, sparsity=None, mesh=jax.make_mesh((1,), ("dirs",)))
    assert meshed.cost(slice(None)).chunk_bytes == one
