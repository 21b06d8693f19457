"""The package imported is this checkout's (PyPI has an unrelated ``flowjax``), with its public API."""

from pathlib import Path

import chex

import flowjax

ROOT = Path(__file__).resolve().parents[1]


def test_flowjax_is_this_checkout():
    assert Path(flowjax.__file__).resolve().is_relative_to(ROOT), flowjax.__file__
    assert Path(flowjax.__file__).resolve().parent == ROOT / "flowjax"


def test_public_api_names():
    for name in [
        "CondOT",
        "VPLinear",
        "VPCosine",
        "SubVP",
        "VE",
        "EDM",
        "GaussianPath",
        "GaussianMixture",
        "convert",
        "checked",
        "get_path",
        "PREDICTIONS",
    ]:
        assert hasattr(flowjax, name), name
    chex.assert_equal(flowjax.PREDICTIONS, ("velocity", "score", "eps", "x1", "v"))
    chex.assert_type(flowjax.CondOT().alpha(0.5), float)
