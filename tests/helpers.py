"""Shared test functions and the dense reference."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).parent.parent

MODES = ("fwd_over_rev", "rev_over_fwd", "rev_over_rev")


def assert_tree_close(actual, expected, rtol=1e-10, atol=1e-10):
    a_leaves, a_tree = jax.tree_util.tree_flatten(actual)
    e_leaves, e_tree = jax.tree_util.tree_flatten(expected)
    assert a_tree == e_tree
    for a, e in zip(a_leaves, e_leaves, strict=True):
        assert np.shape(a) == np.shape(e)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def mixed(x):
    """A scalar function of any-shaped x with a dense, asymmetric-looking Hessian."""
    flat = jnp.ravel(x)
    return (
        jnp.sum(jnp.sin(flat) ** 2 * flat[::-1])
        + flat[0] * jnp.sum(flat**3)
        + jnp.prod(jnp.cos(flat[:3]))
    )


def fresh_env(devices=8):
    """The environment of a fresh interpreter with ``devices`` simulated CPU devices.

    ``XLA_FLAGS`` must be set before JAX starts, so tests needing several devices run
    scripts in such interpreters. x64 is on and this checkout is first on the path.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_ENABLE_X64"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_fresh(script, *args, devices=8, timeout=300):
    """Run ``script`` (Python source) in a fresh interpreter (see ``fresh_env``).

    Returns stdout; fails the test with stdout and stderr when the script fails.
    """
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT,
        env=fresh_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
