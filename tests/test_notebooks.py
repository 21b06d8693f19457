"""The teaching notebooks: each runs top to bottom in its fast and in its full mode, stored clean.

Each notebook is executed with nbclient in a fresh ``python3`` kernel of this interpreter, with
``FLOWJAX_FAST=1`` (tiny step counts; the fast suite) or without it (the full version a reader
runs, 30-120 s each on a CPU; slow tests), and ``MPLBACKEND=Agg``, from the repository root with
the root on ``PYTHONPATH``, so ``import flowjax`` is this checkout (an extra cell appended to the
in-memory copy checks it). A cell that raises, including a failed ``assert`` on ground truth or on
a conclusion the text states, fails the test. No cell may wait for a widget event: the executed
path of every notebook is plain code (a cell that waited would hit the cell timeout).
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import types

import chex
import nbclient
import nbformat
import pytest

from tests.conftest import ROOT

NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_scores_by_hand.ipynb",
    "02_four_parameterizations.ipynb",
    "03_ode_vs_sde.ipynb",
    "04_langevin_and_pc.ipynb",
    "05_flow_matching_vs_ddpm.ipynb",
    "06_exact_likelihood.ipynb",
    "07_guidance_and_inverse_problems.ipynb",
    "08_reflow.ipynb",
]
# the repository's one URL: setup.cfg's [metadata] url (the badges and install cells must match it)
_CFG = configparser.ConfigParser()
_CFG.read(ROOT / "setup.cfg")
REPO_URL = _CFG["metadata"]["url"]  # https://github.com/<owner>/<name>
COLAB = REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/")
COLAB += "/blob/main/notebooks/"
INSTALL_URL = f"git+{REPO_URL}"

_CHECK_IMPORT = f"""
import flowjax as _fj, pathlib as _pl
_f = _pl.Path(_fj.__file__).resolve()
assert _f.is_relative_to(_pl.Path({str(ROOT)!r}).resolve()), f"flowjax imported from {{_f}}"
import sys as _sys
assert _pl.Path(_sys.executable).resolve() == _pl.Path({sys.executable!r}).resolve(), _sys.executable
"""


def _read(name: str):
    return nbformat.read(NB_DIR / name, as_version=4)


def test_the_notebooks_are_all_there():
    assert [n for n in EXPECTED if n not in NOTEBOOKS] == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean_with_badge_and_install_cell(name):
    nb = _read(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert "colab-badge.svg" in first.source and f"({COLAB}{name})" in first.source
    install = nb.cells[1]
    assert install.cell_type == "code"
    assert '"google.colab" in sys.modules' in install.source and INSTALL_URL in install.source
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                f"{name}: cell {i} has stored outputs; clear them before committing"
            )
    assert any("FLOWJAX_FAST" in c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.parametrize("returncode", [0, 1])
def test_install_cell_on_colab(name, returncode, monkeypatch):
    """The install cell, run as on Colab: pip gets FLOWJAX_SOURCE; a failure says what to do."""
    calls = []

    def fake_run(cmd, *args, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    namespace: dict = {}
    source = _read(name).cells[1].source
    if returncode == 0:
        exec(source, namespace)
    else:
        with pytest.raises(RuntimeError, match="wheel") as info:
            exec(source, namespace)
        assert "FLOWJAX_SOURCE" in str(info.value) and INSTALL_URL in str(info.value)
    chex.assert_equal(len(calls), 1)
    chex.assert_equal(calls[0][1:5], ["-m", "pip", "install", "-q"])
    assert calls[0][-1] == namespace["FLOWJAX_SOURCE"] and INSTALL_URL in calls[0][-1]


def test_install_cell_does_nothing_off_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran pip off Colab"))
    for name in NOTEBOOKS:
        exec(_read(name).cells[1].source, {})


def _execute(name: str, monkeypatch, *, fast: bool):
    nb = _read(name)
    nb.cells.append(nbformat.v4.new_code_cell(_CHECK_IMPORT))
    # The kernel inherits this environment: the mode, no display, this checkout first.
    if fast:
        monkeypatch.setenv("FLOWJAX_FAST", "1")
    else:
        monkeypatch.delenv("FLOWJAX_FAST", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]  # fmt: skip
    chex.assert_equal(errors, [])


def test_no_notebook_uses_widgets_in_its_executed_code():
    """ipywidgets' ``interact`` can idle headless until the cell timeout (an nbclient problem)."""
    for name in NOTEBOOKS:
        for cell in _read(name).cells:
            if cell.cell_type == "code":
                assert "ipywidgets" not in cell.source and "interact(" not in cell.source, name


# The fast suite (the README's test command, < 10 min on 2 cores) runs 01 and 03 (the one that
# once stalled on a widget) in fast mode; the others run in fast mode under --runslow, and every
# notebook also runs in full mode there.
_HEAVY_FAST = {
    "02_four_parameterizations.ipynb",
    "04_langevin_and_pc.ipynb",
    "05_flow_matching_vs_ddpm.ipynb",
    "06_exact_likelihood.ipynb",
    "07_guidance_and_inverse_problems.ipynb",
    "08_reflow.ipynb",
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] * (n in _HEAVY_FAST)) for n in NOTEBOOKS]
)
def test_notebook_runs(name, monkeypatch):
    _execute(name, monkeypatch, fast=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_full(name, monkeypatch):
    """The full version, as a reader runs it (CI runs the slow tests, two workers)."""
    _execute(name, monkeypatch, fast=False)
