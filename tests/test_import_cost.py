"""`import lazyhess` stays light: heavy and optional packages are imported where used."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("scipy.optimize", "numba", "matplotlib", "tqdm")


def _modules_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.slow
def test_import_lazyhess_skips_heavy_and_optional_packages():
    loaded = _modules_after("import lazyhess")
    assert "lazyhess._hessian" in loaded
    assert not [m for m in HEAVY if m in loaded]


@pytest.mark.slow
def test_coloring_imports_numba_on_first_use():
    code = (
        "import jax.numpy as jnp, lazyhess\n"
        "lazyhess.hessian_coloring(lambda x: jnp.sum(x[1:] * x[:-1]), jnp.ones(4))"
    )
    assert "numba" in _modules_after(code)
