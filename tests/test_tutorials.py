"""The tutorial notebooks under docs/tutorials: valid, stored with outputs, listed in the index.

No notebook is executed here (the docs build executes those marked for it); these checks keep
the stored pages honest: every code cell ran and left its output, none failed, and the index
links every notebook.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: Tools the documentation builder does not have: a notebook calling them cannot be executed
#: there, so it must not be marked for execution.
EXTERNAL_TOOLS = ("macs3", "bamCompare", "samtools")


def _toctree_entries(index: Path) -> list[str]:
    text = index.read_text()
    blocks = re.findall(r"```\{toctree\}(.*?)```", text, flags=re.S)
    entries = []
    for block in blocks:
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                entries.append(line)
    return entries


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 5, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_and_stored_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), (
        f"{path.name} must open with a markdown title"
    )
    for i, cell in enumerate(code):
        assert cell.execution_count is not None, f"{path.name}: code cell {i} was not executed"
        assert cell.outputs, f"{path.name}: code cell {i} has no stored output"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: code cell {i} stored an error: {errors[0].ename}"
        streams = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert "Traceback (most recent call last)" not in streams, (
            f"{path.name}: code cell {i} printed a traceback"
        )
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name} was not executed top to bottom in one kernel: {counts}"
    )
    assert "/work/shared" not in "".join(c.source for c in nb.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_execution_mode(path):
    nb = nbformat.read(path, as_version=4)
    mode = nb.metadata.get("mystnb", {}).get("execution_mode")
    assert mode in (None, "force"), f"{path.name}: unexpected mystnb execution_mode {mode!r}"
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    uses = [t for t in EXTERNAL_TOOLS if re.search(rf"[\"'!\s]{t}[\"'\s]", source)]
    if mode == "force":
        assert not uses, f"{path.name} is executed by the docs build but calls {uses}"


def test_index_lists_every_notebook():
    entries = _toctree_entries(TUTORIALS / "index.md")
    listed = {e.removesuffix(".ipynb") for e in entries}
    assert listed == {p.stem for p in NOTEBOOKS}, (listed, [p.stem for p in NOTEBOOKS])
