"""Execute every notebook in notebooks/ and the README's Python example, so the docs cannot rot.

No Jupyter kernel is needed: the .ipynb JSON is parsed and its code cells are executed in order in
one namespace, with matplotlib's non-interactive Agg backend and ``QGEO_FAST=1`` (notebooks read it
to choose small meshes; each must run in well under a minute that way). Every figure a notebook
makes is rendered to PNG in memory, so plotting code is exercised too. Notebooks are collected by
globbing, so a new notebook is tested as soon as it is added. Notebooks check their own physics
with ``assert`` (the quick start compares the Dirac closed forms, the Haldane phase boundary
|Δ| = 3√3|t2 sin φ| and the Středa slope dM/dμ = C e/h); an assertion failing fails the test.

Notebooks must not rely on IPython magics (``%`` / ``!`` lines): they are rejected here, because
a script-like notebook is one a reader can also run with plain Python.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    p for p in (ROOT / "notebooks").glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
)


def code_cells(path: Path) -> list[str]:
    """Source of each code cell of an nbformat-4 notebook, in order."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb.get("nbformat") == 4, f"{path.name}: expected nbformat 4"
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = cell["source"]
        cells.append("".join(src) if isinstance(src, list) else src)
    return cells


def run_cells(cells: list[str], label: str) -> dict:
    """Execute cells in one fresh namespace (like a kernel would), then render all figures."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.close("all")
    namespace: dict = {"__name__": "__main__"}
    for i, src in enumerate(cells):
        magics = [ln for ln in src.splitlines() if re.match(r"\s*[%!]", ln)]
        assert not magics, f"{label} cell {i}: IPython magics are not allowed: {magics[0]!r}"
        exec(compile(src, f"<{label} cell {i}>", "exec"), namespace)
    try:
        for num in plt.get_fignums():
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            assert buf.tell() > 1000, f"{label}: figure {num} rendered to an empty image"
    finally:
        plt.close("all")
    return namespace


def test_notebooks_are_collected():
    names = [p.name for p in NOTEBOOKS]
    assert "quickstart.ipynb" in names and "materials.ipynb" in names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib", reason="notebooks need matplotlib (pip install '.[test]')")
    monkeypatch.setenv("QGEO_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)  # anything a notebook writes lands in a temporary directory
    start = time.perf_counter()
    run_cells(code_cells(path), path.name)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s in fast mode")
    # The budget is < 60 s per notebook in fast mode; 3x that catches a notebook that ignores
    # QGEO_FAST without making the test flaky on a busy machine.
    assert elapsed < 180, f"{path.name} took {elapsed:.0f} s in fast mode (budget 60 s)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_reads_fast_switch(path):
    """Every notebook must look at QGEO_FAST, so the suite can run it on small meshes."""
    assert "QGEO_FAST" in "\n".join(code_cells(path)), f"{path.name} never reads QGEO_FAST"


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs(capsys):
    """The README's Python example runs as written and prints what its comments claim."""
    blocks = readme_python_blocks()
    assert blocks, "README.md has no ```python block"
    example = blocks[0]
    code_lines = [
        ln for ln in example.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert len(code_lines) <= 12, f"the README example should stay short ({len(code_lines)} lines)"
    run_cells([example], "README example")
    out = capsys.readouterr().out
    # Haldane's default parameters are in the Chern phase: |C| = 1 (Haldane, PRL 61, 2015 (1988)),
    # and in the gap σ_xy = −C e²/h, dM/dμ = C e/h — the printed lines must show the plateau.
    assert re.search(r"Chern number[^\n]*-1\.0000", out), out
