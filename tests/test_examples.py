"""Every example runs, at a small size."""

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart(capsys):
    module = runpy.run_path(str(EXAMPLES / "quickstart.py"))
    module["main"](n=50)
    out = capsys.readouterr().out
    assert "H[:, 7] (column 7)             shape=(50,)    cost=1 HVP(s)" in out
    assert "H[7, :] (row 7, by symmetry)   shape=(50,)    cost=0 HVP(s)" in out
