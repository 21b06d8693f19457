"""Test configuration: strict JAX options, float64 on request, opt-in slow tests, subprocess runner.

The main test process keeps one CPU device; tests that need several devices or processes run a
snippet in a fresh interpreter through :func:`run_python` (the device count must be fixed before
JAX starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Opt-in runtime type checking (issue 18): FLOWJAX_TYPECHECK=1 checks every jaxtyping-annotated
# function of flowjax (dtypes and shapes of arguments and returns) with beartype. The hook must be
# installed before flowjax is first imported, so it comes before the imports below.
if os.environ.get("FLOWJAX_TYPECHECK") == "1":
    from jaxtyping import install_import_hook

    install_import_hook("flowjax", "beartype.beartype")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


# Fuzz tests (hypothesis): few examples in the default run, more under --runslow; no deadline
# (the first example of a shape compiles), derandomized so that CI runs are repeatable.
_HYPOTHESIS = {"deadline": None, "derandomize": True, "print_blob": True}
_HYPOTHESIS["suppress_health_check"] = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("flowjax-fast", max_examples=8, **_HYPOTHESIS)
settings.register_profile("flowjax-slow", max_examples=60, **_HYPOTHESIS)


def pytest_configure(config):
    settings.load_profile("flowjax-slow" if config.getoption("--runslow") else "flowjax-fast")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    # tests needing pytorch-fid last: CI installs it in the background while the others run
    items.sort(key=lambda item: "needs_fid" in item.keywords)
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats (for checks of numerics against closed forms)."""
    with jax.enable_x64(True):
        yield


def run_python(
    code: str, *, devices: int = 1, timeout: float = 600, env: dict | None = None
) -> str:
    """Run ``code`` in a fresh Python with ``devices`` CPU devices; return stdout, fail on error."""
    full_env = dict(os.environ)
    full_env["XLA_FLAGS"] = (
        full_env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    ).strip()
    full_env["JAX_PLATFORMS"] = "cpu"
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(ROOT),
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout
