"""The notebook summary (HTML with a pattern picture) and the matplotlib spy plot."""

import struct
import sys
import zlib

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

import lazyhess
from benchmarks.problems import PROBLEMS
from lazyhess._display import _PALETTE, _cell_grid, spy


def _decode_png(data: bytes) -> np.ndarray:
    """The RGB pixels of an 8-bit, unfiltered, truecolor PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, {}
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(
            kind + body
        )
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    width, height, depth, color, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color) == (8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:].reshape(height, width, 3)


def _picture(html: str, cells: int) -> np.ndarray:
    """The picture's cells: the image is drawn ``192 // cells`` pixels per cell."""
    import base64

    encoded = html.split("data:image/png;base64,")[1].split("'")[0]
    image = _decode_png(base64.b64decode(encoded))
    scale = max(1, 192 // cells)
    assert image.shape == (cells * scale, cells * scale, 3)
    return image[::scale, ::scale]


def _genrose(n):
    f, x0 = PROBLEMS["GENROSE"].make(n)
    return lazyhess.hessian(f, x0)


def test_cell_grid_is_the_pattern_when_small():
    pattern = sp.random_array((30, 30), density=0.1, rng=np.random.default_rng(0)) != 0
    pattern = sp.csr_array(pattern + pattern.T + sp.eye_array(30, dtype=bool))
    seeded = np.zeros(30, dtype=bool)
    seeded[[3, 17]] = True
    grid = _cell_grid(pattern, 30, 30, seeded)
    dense = pattern.toarray()
    expected = dense.astype(np.int8)
    expected[dense & (seeded[:, None] | seeded[None, :])] = 2
    np.testing.assert_array_equal(grid, expected)


def test_cell_grid_downsamples():
    n, cells = 1000, 64
    grid = _cell_grid(sp.csr_array(sp.eye_array(n, dtype=bool)), n, cells, np.zeros(n, bool))
    np.testing.assert_array_equal(grid, np.eye(cells, dtype=np.int8))
    dense = _cell_grid(None, n, cells, np.arange(n) == 999)
    assert np.all(dense[-1] == 2) and np.all(dense[:, -1] == 2)
    assert np.all(dense[:-1, :-1] == 1)


@pytest.mark.slow
def test_html_computes_nothing():
    H = _genrose(200)
    html = H._repr_html_()
    assert H.cache_info().hvps == 0
    assert "pattern" not in H._engine.structure.__dict__, "the summary triggered detection"
    assert "not detected yet" in html and "not computed yet" in html
    picture = _picture(html, 64)
    assert np.all(picture == _PALETTE[0])  # nothing known, nothing computed


def test_html_after_a_column_shows_it():
    H = lazyhess.hessian(
        lambda x: jnp.sum(jnp.sin(x) ** 2) * jnp.sum(x), jnp.ones(40), sparsity=None
    )
    H[:, 7]
    np.testing.assert_array_equal(np.flatnonzero(H._engine.computed_columns()), [7])
    html = H._repr_html_()
    assert "dense (every entry may be nonzero)" in html
    assert "1 of 40 columns (and rows) in cached HVP seeds" in html
    assert "HVPs spent</th><td style='text-align:left'>1 " in html
    picture = _picture(html, 40)
    expected = np.ones((40, 40), dtype=np.int8)
    expected[7, :] = expected[:, 7] = 2
    np.testing.assert_array_equal(picture, _PALETTE[expected])


@pytest.mark.slow
def test_html_after_full_sparse_hessian():
    H = _genrose(200)
    H.to_sparse("csr")
    colored = H._engine.structure.colored
    html = H._repr_html_()
    assert "598 nonzeros" in html
    assert f"{colored.num_colors} ({colored.method})" in html
    assert "200 of 200 columns (and rows)" in html
    picture = _picture(html, 64)
    grid = _cell_grid(H._engine.structure.csr, 200, 64, np.ones(200, dtype=bool))
    np.testing.assert_array_equal(picture, _PALETTE[grid])
    assert np.all(np.diag(grid) == 2) and grid[0, -1] == 0


def test_html_with_a_given_pattern():
    pattern = PROBLEMS["ARWHEAD"].pattern(30)
    H = lazyhess.hessian(PROBLEMS["ARWHEAD"].make(30)[0], jnp.ones(30), sparsity=pattern)
    html = H._repr_html_()
    assert f"{pattern.nnz} nonzeros" in html and H.cache_info().hvps == 0
    np.testing.assert_array_equal(_picture(html, 30), _PALETTE[pattern.to_dense().astype(np.int8)])


@pytest.mark.slow
def test_html_for_pytree_and_batch():
    H = lazyhess.hessian(
        lambda p: jnp.sum(p["a"] ** 3) * jnp.sum(p["b"]), {"a": jnp.ones(3), "b": jnp.ones(2)}
    )
    html = H._repr_html_()
    assert "nested (H.shape lists the blocks)" in html
    assert "[&#x27;a&#x27;]" in html and "[&#x27;b&#x27;]" in html
    assert "priced once the pattern is known" in html
    dense = lazyhess.hessian(H._shared.fun, {"a": jnp.ones(3), "b": jnp.ones(2)}, sparsity=None)
    dense["a"]["b"][1]
    line = "H[:] would cost</th><td style='text-align:left'>4 new HVPs, 1 from the cache"
    assert line in dense._repr_html_()
    assert (H.cache_info().hvps, dense.cache_info().hvps) == (0, 1)
    image = _picture(html, 5)
    assert image.shape == (5, 5, 3)
    Hb = lazyhess.hessian(lambda x: jnp.sum(x**3, axis=1), jnp.ones((4, 3)), batch_axis=0)
    Hb[:, 1]
    assert "1 of 3 columns" in Hb._repr_html_()


@pytest.fixture
def plt():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


@pytest.mark.slow
def test_spy_hessian_marks_computed(plt):
    H = _genrose(50)
    H[:, 10]
    ax = spy(H)
    image = np.asarray(ax.images[0].get_array())
    expected = _cell_grid(H._engine.structure.csr, 50, 50, H._engine.computed_columns())
    np.testing.assert_array_equal(image, expected)
    assert expected[10, 11] == 2 and expected[20, 21] == 1
    assert ax.get_title() == "50 x 50, nnz = 148"


def test_spy_colored_pattern_uses_its_colors(plt):
    colored = lazyhess.hessian_coloring(PROBLEMS["GENROSE"].make(30)[0], jnp.ones(30))
    fig, ax = plt.subplots()
    assert spy(colored, ax=ax) is ax
    painted = ax.images[1].get_array()
    dense = colored.csr.toarray()
    np.testing.assert_array_equal(painted.mask, ~dense)
    rows, cols = np.nonzero(dense)
    np.testing.assert_array_equal(painted[rows, cols], colored.colors[cols] % 20)


def test_spy_accepts_patterns_and_matrices(plt):
    pattern = PROBLEMS["ARWHEAD"].pattern(20)
    for obj in (pattern, pattern.to_scipy("csr"), pattern.to_dense()):
        image = spy(obj).images[0].get_array()
        np.testing.assert_array_equal(image, pattern.to_dense().astype(np.int8))
    big = spy(PROBLEMS["GENROSE"].pattern(2000)).images[0].get_array()
    assert big.shape == (512, 512)


def test_spy_refuses_bad_input(plt):
    with pytest.raises(TypeError, match="spy needs a Hessian"):
        spy([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="square"):
        spy(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"one color per column, shape \(4,\)"):
        spy(np.eye(4), colors=np.zeros(3, int))


def test_spy_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "lazyhess\[plot\]"'):
        spy(np.eye(3))
