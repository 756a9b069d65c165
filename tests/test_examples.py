"""Every example runs, at a small size."""

import re
import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart(capsys):
    module = runpy.run_path(str(EXAMPLES / "quickstart.py"))
    module["main"](n=50)
    out = capsys.readouterr().out
    assert "H[:, 7] (column 7)             shape=(50,)    cost=1 HVP(s)" in out
    assert "H[7, :] (row 7, by symmetry)   shape=(50,)    cost=0 HVP(s)" in out


def _run(name, capsys, **size):
    runpy.run_path(str(EXAMPLES / name))["main"](**size)
    return capsys.readouterr().out


def _number(out, label):
    """The float printed right after ``label``."""
    return float(re.search(re.escape(label) + r"\s*([-+0-9.e]+)", out).group(1))


@pytest.mark.slow
def test_mlp_hessian(capsys):
    out = _run("mlp_hessian.py", capsys, width=4, samples=8)
    assert "41 parameters: the full Hessian would cost 41 HVPs" in out
    assert re.search(r'H\["layer1"\]\["b"\]\["layer1"\]\["b"\].*shape=\(4, 4\)\s+cost=4 HVPs', out)
    assert re.search(r"\.diagonal\(\)\s+shape=\(3, 4\)\s+cost=12 HVPs", out)
    assert re.search(r"\(three rows\)\s+shape=\(3, 41\)\s+cost=3 HVPs", out)


def test_large_sparse(capsys):
    out = _run("large_sparse.py", capsys, n=10_000)
    assert "nnz = 49600 (5.0 per row)" in out
    assert re.search(r'H.to_sparse\("csr"\).*\s5 HVPs', out)  # one per color of the 5-point grid
    assert "10000 x 10000 CSR, nnz = 49600" in out
    assert _number(out, "peak") > 0


@pytest.mark.slow
def test_newton_scipy(capsys):
    out = _run("newton_scipy.py", capsys, n=1000)
    assert out.count("f = 1.000000000000") == 3
    # The last iterate's HVPs: star's 3, or the acyclic coloring's 2 when its program ran
    # faster at the iterates before (Engine._read_at_once races both).
    line = next(line for line in out.splitlines() if "HVPs per Hessian" in line)
    assert "2998 nonzeros" in line and _number(line, "nonzeros,") in (2, 3)
    for method in ("Newton,", "trust-constr", "Newton-CG"):
        line = next(line for line in out.splitlines() if method in line)
        assert _number(line, "max|x - 1| =") < 1e-6


@pytest.mark.slow
def test_per_sample(capsys):
    out = _run("per_sample.py", capsys, batch=16, features=5)
    assert "shape (16, 5), 1 HVP(s)" in out
    assert "H[:]: shape (16, 5, 5), 5 HVPs in total (d = 5)" in out
    assert _number(out, "max |H - vmap(jax.hessian)| =") < 1e-12


@pytest.mark.slow
def test_eigenvalues(capsys):
    out = _run("eigenvalues.py", capsys, width=8, samples=32)
    assert "48 parameters" in out
    assert _number(out, "max difference from dense eigvalsh:") < 1e-8


@pytest.mark.slow
def test_network_curvature(capsys, tmp_path):
    path = tmp_path / "spectrum.png"
    out = _run("network_curvature.py", capsys, width=4, samples=16, budget=12, out=str(path))
    assert "41 parameters, HVP budget 12 per estimate" in out
    # layer0/w (12 weights) and layer2/w (4) fit the budget: exact; layer1/w (16) does not.
    assert re.search(r"layer0/w \(12 weights\).*\(12 HVPs\);.*\(12 HVPs, exact\)", out)
    assert re.search(r"layer1/w \(16 weights\).*\(12 HVPs\);.*± [0-9.e-]+ \(12 HVPs\);", out)
    assert re.search(r"layer2/w \(4 weights\).*\(4 HVPs\);.*\(4 HVPs, exact\)", out)
    errors = [float(e) for e in re.findall(r"eigenvalue error ([-+0-9.e]+)", out)]
    bounds = [float(b) for b in re.findall(r"\(bound ([-+0-9.e]+)\)", out)]
    assert len(errors) == 3 and all(e <= b + 1e-12 for e, b in zip(errors, bounds, strict=True))
    assert "spectral density: 320 HVPs" in out
    span = re.search(r"Ritz values span \[(.*), (.*)\]", out).groups()
    dense = re.search(r"dense spectrum: +\[(.*), (.*)\]", out).groups()
    assert span == dense
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_notebook_workflow():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / "notebook_workflow.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": EXAMPLES}}
    )
    client.execute()  # raises CellExecutionError on any failed cell (each checks jax.hessian)
    text = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "one block: Cost(new_hvps=12, cached_hvps=0" in text
    assert "again: Cost(new_hvps=0, cached_hvps=12" in text
    assert "HVPs so far: 0" in text
    html = notebook.cells[1].outputs[0]["data"]["text/html"]
    assert "layer0" in html and "layer1" in html
