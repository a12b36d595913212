"""Source notebooks: committed without outputs, one parameters cell, no hard-wired paths.

The notebooks themselves are executed by nbval (``pytest --nbval-lax notebooks/``, part of
``make test``); the report runner is tested end to end in ``test_report.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from mmae_utils.report import NOTEBOOKS

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NB_DIR.glob("*.ipynb"))


def test_every_tutorial_notebook_exists():
    assert [p.stem for p in PATHS][: len(NOTEBOOKS)] == list(NOTEBOOKS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; strip them before committing"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_one_documented_parameters_cell_near_the_top(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] == 0, (
        "the first code cell, and only it, is tagged 'parameters'"
    )
    params = code[0].source
    tree = ast.parse(params)
    names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    assert names and all(re.fullmatch(r"[A-Z][A-Z0-9_]*", n) for n in names), names
    for line in params.splitlines():
        if "=" in line:
            assert "#" in line, f"parameter without a comment: {line!r}"
    assert "SEED" in names and "RUN_DIR" in names
    # the next code cell prints versions and sets the seed
    assert "setup_session(SEED)" in code[1].source


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_no_chdir_syspath_or_offset_slicing(path):
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "os.chdir" not in source and "sys.path" not in source
    assert not re.search(r"\[\s*:\s*,\s*\d+\s*:\s*\d+\s*\]", source), "modalities by column offsets"
    assert not re.search(r"[\"'](/|~/|\.\./)", source), "hard-coded absolute or parent paths"
    assert "todense()" not in source


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_starts_with_a_title_and_what_you_learn(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "What you learn" in first.source


def test_readme_documents_every_notebook_parameter():
    readme = (NB_DIR.parent / "README.md").read_text()
    for path in PATHS:
        nb = nbformat.read(path, as_version=4)
        source = next(c for c in nb.cells if c.cell_type == "code").source
        for name in re.findall(r"^([A-Z][A-Z0-9_]*) = ", source, flags=re.M):
            assert f"`{name}`" in readme, f"README does not document {name} ({path.name})"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path):
    """papermill drops a parameter whose comment it cannot parse (e.g. one with '=')."""
    from mmae_utils.report import notebook_parameters

    nb = nbformat.read(path, as_version=4)
    source = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source
    names = re.findall(r"^([A-Z][A-Z0-9_]*) = ", source, flags=re.M)
    assert list(notebook_parameters(path)) == names
