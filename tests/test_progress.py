"""Progress bars: silent by default, shown on request, a clear error without tqdm."""

import builtins

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rosen

import lazyhess

X = jnp.linspace(-1.0, 1.0, 40)


def test_silent_by_default(capsys):
    H = lazyhess.hessian(rosen, X, sparsity=None, chunk_size=4)
    H[:]
    assert capsys.readouterr().err == ""


def test_bars_for_chunks_detection_and_coloring(capsys):
    pytest.importorskip("tqdm")
    H = lazyhess.hessian(rosen, X, sparsity=None, chunk_size=4, progress=True)
    np.testing.assert_allclose(H[:], lazyhess.hessian(rosen, X, sparsity=None)[:])
    assert "HVP chunks" in capsys.readouterr().err
    lazyhess.hessian(rosen, X, progress=True).to_sparse("csr")
    err = capsys.readouterr().err
    assert "detecting sparsity" in err and "coloring" in err


def test_module_default(capsys):
    pytest.importorskip("tqdm")
    lazyhess.set_progress_default(True)
    try:
        lazyhess.hessian(rosen, X, sparsity=None, chunk_size=4)[:]
        assert "HVP chunks" in capsys.readouterr().err
        lazyhess.hessian(rosen, X, sparsity=None, chunk_size=4, progress=False)[:]
        assert capsys.readouterr().err == ""
    finally:
        lazyhess.set_progress_default(False)


def test_missing_tqdm_and_bad_values(monkeypatch):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError("No module named 'tqdm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with pytest.raises(ImportError, match=r'pip install "lazyhess\[progress\]"'):
        lazyhess.hessian(rosen, X, progress=True)
    with pytest.raises(ImportError, match="tqdm"):
        lazyhess.set_progress_default(True)
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        lazyhess.hessian(rosen, X, progress="yes")
