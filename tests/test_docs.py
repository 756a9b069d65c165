"""The documentation site builds strictly, and the code on its pages runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Pages whose python blocks run top to bottom in one namespace (sparsity.md and
# coloring.md are run by their own tests).
RUNNABLE = [
    "index.md",
    "getting-started.md",
    "indexing.md",
    "costs.md",
    "batches.md",
    "large-problems.md",
    "formats.md",
    "integrations.md",
    "curvature.md",
    "coming-from.md",
]


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("hessian", "Hessian", "hessp", "spy", "hessian_coloring"):
        assert f'id="lazyhess.{name}"' in api or f'id="lazyhess.scipy.{name}"' in api, name


def test_every_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in DOCS.glob("*.md")}
    listed = set(re.findall(r":\s*([\w-]+\.md)", config))
    assert pages == listed


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_page_code_runs(page):
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page} has no python example"
    namespace = {"__name__": f"docs_{page}"}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), namespace)
