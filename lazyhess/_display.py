"""Pictures of a Hessian: an HTML summary for notebooks and a matplotlib ``spy``."""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ._cache import format_bytes
from ._csr import entry_rows

if TYPE_CHECKING:
    from ._engine import Cost, Engine
    from ._tree import Layout

_CELLS = 64
_SPY_CELLS = 512
_EMPTY, _NONZERO, _COMPUTED = 0, 1, 2
# white, grey, orange: structural zero, may be nonzero, computed (its seed is cached).
_PALETTE = np.array([[255, 255, 255], [170, 178, 189], [228, 87, 46]], dtype=np.uint8)
_BLOCK_LINE = np.array([40, 70, 160], dtype=np.uint8)


def _cell_grid(csr: sp.csr_array | None, n: int, cells: int, seeded: np.ndarray) -> np.ndarray:
    """A ``(cells, cells)`` grid of ``_EMPTY``, ``_NONZERO``, ``_COMPUTED`` over the pattern.

    A cell is computed when it holds an entry in a computed row or column; ``csr=None``
    means every entry may be nonzero.
    """
    grid = np.zeros((cells, cells), dtype=np.int8)
    if n == 0:
        return grid
    if csr is None:
        hit = np.zeros(cells, dtype=bool)
        hit[np.flatnonzero(seeded) * cells // n] = True
        grid[:] = _NONZERO
        grid[hit, :] = _COMPUTED
        grid[:, hit] = _COMPUTED
        return grid
    rows = entry_rows(csr.indptr, np.int64)
    cols = csr.indices.astype(np.int64)
    cell = (rows * cells // n) * cells + cols * cells // n
    flat = grid.reshape(-1)
    flat[cell] = _NONZERO
    flat[cell[seeded[rows] | seeded[cols]]] = _COMPUTED
    return grid


def _png(rgb: np.ndarray) -> bytes:
    """A PNG file of an ``(h, w, 3)`` uint8 image (no compression tricks, no dependency)."""
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _cost_line(price: Callable[[], Cost], known: bool) -> str:
    """What ``H[:]`` would cost (``price()``), once the pattern is known (it may color it)."""
    if not known:
        return "priced once the pattern is known (H.sparsity detects it)"
    cost = price()
    return (
        f"{cost.new_hvps:,} new HVPs, {cost.cached_hvps:,} from the cache; result "
        f"{format_bytes(cost.result_bytes)}"
    )


def _blocks(layout: Layout, cells: int, scale: int) -> tuple[list[int], str]:
    """Pixel positions of the boundaries between input leaves, and their labels as HTML."""
    inputs = layout.inputs
    n = layout.n
    if len(inputs) < 2 or not n:
        return [], ""
    size = cells * scale
    edges = [leaf.offset * size // n for leaf in inputs[1:]]
    labels = "".join(
        f"<span style='position:absolute;left:{(leaf.offset + leaf.size / 2) * 192 / n:.0f}px;"
        "transform:translateX(-50%);white-space:nowrap'>"
        f"{html.escape(leaf.path or '(root)')}</span>"
        for leaf in inputs
    )
    return edges, (
        f"<div style='position:relative;height:1.2em;width:192px;font-size:smaller'>{labels}</div>"
    )


def hessian_html(
    engine: Engine, shape: Any, lead: tuple[int, ...], price: Callable[[], Cost]
) -> str:
    """An HTML summary of a Hessian for notebooks, computing no HVP and running no detection.

    ``engine`` is the Hessian's point, ``shape`` its (possibly nested) shape, ``lead`` the
    leading axes of its flat view, and ``price()`` what ``H[:]`` costs.

    Shows the shape and dtype, the sparsity pattern's nnz and the number of colors when
    they are already known, what ``H[:]`` would cost (new HVPs and cache reads, once the
    pattern is known), the HVPs spent and the cache's use, and a picture of the flat
    pattern (at most 64 x 64 cells; grey: may be nonzero, orange: in a row or column whose
    HVP is cached) with the block grid of pytree inputs and the leaves' names. Cost:
    O(N + nnz) host work, plus coloring the pattern if it is known but not yet colored.
    """
    info = engine.info()
    n = engine.layout.n
    structure = engine.structure
    known = structure.known
    csr = structure.csr if known else None
    if not known:
        pattern = "not detected yet"
    elif csr is None:
        detected = structure.pattern is not None
        pattern = (
            "dense (detected: every entry)" if detected else "dense (every entry may be nonzero)"
        )
    else:
        pattern = f"{csr.nnz:,} nonzeros ({csr.nnz / max(n * n, 1):.2e} of the entries)"
    cost = _cost_line(price, known)
    colors = (
        f"{structure.colored.num_colors} ({structure.colored.method})"
        if structure.colored_known
        else "not computed yet"
    )
    seeded = engine.computed_columns()
    shape = shape if isinstance(shape, tuple) else "nested (H.shape lists the blocks)"
    rows = [
        ("shape", str(shape)),
        ("flat", f"{lead + (n, n)} {engine.layout.dtype}"),
        ("pattern", pattern),
        ("colors", colors),
        ("H[:] would cost", cost),
        ("HVPs spent", f"{info.hvps:,} (cache hits {info.hits:,})"),
        (
            "cache",
            f"{info.entries:,} HVP results, {format_bytes(info.bytes)} of "
            f"{format_bytes(info.max_bytes)}",
        ),
        ("seeded", f"{int(seeded.sum()):,} of {n:,} columns (and rows) in cached HVP seeds"),
    ]
    table = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    cells = min(n, _CELLS)
    if not known:
        grid = _cell_grid(None, n, cells, seeded)
        grid[grid == _NONZERO] = _EMPTY
        caption = "pattern unknown; orange: rows and columns in cached seeds"
    else:
        grid = _cell_grid(csr, n, cells, seeded)
        caption = "grey: may be nonzero; orange: in a row or column of a cached seed"
    picture = ""
    if cells:
        scale = max(1, 192 // cells)
        image = _PALETTE[np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)]
        edges, labels = _blocks(engine.layout, cells, scale)
        for edge in edges:
            image[edge, :] = image[:, edge] = _BLOCK_LINE
        if edges:
            caption += "; blue lines: blocks of the input leaves"
        data = base64.b64encode(_png(image)).decode("ascii")
        picture = (
            f"<figure style='margin:0 0 0 1.5em'>{labels}<img alt='Hessian sparsity pattern' "
            f"src='data:image/png;base64,{data}' width='192' height='192' "
            "style='image-rendering:pixelated;border:1px solid #888'/>"
            f"<figcaption style='font-size:smaller'>{html.escape(caption)}</figcaption></figure>"
        )
    return (
        "<div style='display:flex;align-items:flex-start'>"
        f"<div><strong>lazyhess.Hessian</strong><table>{table}</table></div>{picture}</div>"
    )


def engine_spy(engine: Engine) -> tuple[sp.csr_array | None, int, np.ndarray | None, np.ndarray]:
    """``(csr, n, colors, seeded)`` of a Hessian's point.

    The pattern (detected if not yet; ``None`` when dense), the global coloring's colors if
    known, and the columns whose seed is cached.
    """
    structure = engine.structure
    colored = structure.colored if structure.colored_known else None
    return (
        structure.csr,
        engine.layout.n,
        None if colored is None else colored.colors,
        engine.computed_columns(),
    )


def _spy_source(obj: Any) -> tuple[sp.csr_array | None, int, np.ndarray | None, np.ndarray]:
    """``(csr, n, colors, seeded)`` for a Hessian, a pattern or a matrix."""
    from .coloring import ColoredPattern
    from .sparsity import SparsityPattern

    own = getattr(obj, "_spy_source", None)  # a Hessian draws itself
    if own is not None:
        return own()
    if isinstance(obj, ColoredPattern):
        csr, colors = obj.csr, obj.colors
    elif isinstance(obj, SparsityPattern):
        csr, colors = obj.to_scipy("csr"), None
    elif sp.issparse(obj):
        csr, colors = sp.csr_array(obj), None
    elif isinstance(obj, np.ndarray) and obj.ndim == 2:
        csr, colors = sp.csr_array(obj != 0), None
    else:
        raise TypeError(
            "spy needs a Hessian, a SparsityPattern, a ColoredPattern, a scipy sparse matrix "
            f"or a 2-D numpy array; got {type(obj).__name__}."
        )
    csr = sp.csr_array(csr)
    shape: tuple[int, int] = csr.shape  # pyright: ignore[reportAssignmentType]
    if shape[0] != shape[1]:
        raise ValueError(f"spy needs a square pattern; got shape {shape}.")
    csr.sum_duplicates()
    n = shape[0]
    return csr, n, colors, np.zeros(n, dtype=bool)


def spy(H_or_pattern: Any, ax: Any = None, colors: Any = None) -> Any:
    """Plot the flat sparsity pattern of a Hessian (or of a pattern) with matplotlib.

    For a :class:`Hessian`, entries in a row or column whose HVP is cached are drawn in
    orange, the others in grey (the pattern is detected if it is not known yet; a dense
    Hessian shows as a full square). With ``colors``, each entry takes its column's color
    instead (20 hues, repeating; uncolored ``-1`` columns stay grey): pass a coloring's
    ``colors`` (a :class:`ColoredPattern` is drawn with its own colors by default, and so is
    a Hessian whose global coloring is known and nothing is cached). Patterns larger than
    512 x 512 are drawn on a 512 x 512 grid of cells.

    Args:
        H_or_pattern: a :class:`Hessian`, :class:`SparsityPattern`, :class:`ColoredPattern`,
            scipy sparse matrix or 2-D numpy array.
        ax: the matplotlib axes to draw on (default: a new figure's).
        colors: an int array of one color per column (``-1``: uncolored), or ``None``.

    Returns:
        The matplotlib axes.
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError as err:
        raise ImportError(
            'spy needs matplotlib; install it with pip install "lazyhess[plot]".'
        ) from err
    csr, n, own_colors, seeded = _spy_source(H_or_pattern)
    if colors is None and not seeded.any():
        colors = own_colors
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != (n,) or not np.issubdtype(colors.dtype, np.integer):
            raise ValueError(
                f"colors must be an int array of one color per column, shape ({n},); got "
                f"{colors.dtype} of shape {colors.shape}."
            )
    if ax is None:
        ax = plt.figure().add_subplot()
    cells = max(min(n, _SPY_CELLS), 1)
    cmap = ListedColormap(_PALETTE / 255.0)
    if colors is None:
        ax.imshow(_cell_grid(csr, n, cells, seeded), cmap=cmap, vmin=0, vmax=2)
    else:
        ax.imshow(_cell_grid(csr, n, cells, np.zeros(n, dtype=bool)), cmap=cmap, vmin=0, vmax=2)
        painted = np.full((cells, cells), -1)
        if csr is None:
            painted[:, np.arange(n) * cells // n] = colors
        else:
            rows = entry_rows(csr.indptr, np.int64)
            cols = csr.indices.astype(np.int64)
            painted[rows * cells // n, cols * cells // n] = colors[cols]
        ax.imshow(np.ma.masked_where(painted < 0, painted % 20), cmap="tab20", vmin=0, vmax=19)
    ax.set_title(f"{n} x {n}" + ("" if csr is None else f", nnz = {csr.nnz:,}"))
    return ax
