"""The README's quick-start test command is what CI runs."""

import re
from pathlib import Path

import chex

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    test_cmds = [line for b in blocks for line in b.splitlines() if "pytest" in line]
    chex.assert_equal(len(test_cmds), 1, custom_message=str(test_cmds))
    install, test = test_cmds[0].rsplit(" && ", 1)
    assert install in ci.splitlines(), f"CI does not install as the README says: {install}"
    assert any(line.startswith(test) for line in ci.splitlines()), f"CI does not run: {test}"


def test_readme_python_tour_runs():
    """The tour's code blocks run as written (trainings shortened to 20 steps)."""
    import pytest

    readme = (ROOT / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", readme, flags=re.S))
    checked_line = "fj.checked(jax.jit(path.coefficients))(jnp.array(1.5))"
    assert checked_line in code
    code = code.replace(checked_line, "_expect_raise(lambda: " + checked_line + ")")
    code = code.replace("range(3000)", "range(20)")  # the training snippet
    code = code.replace("range(2000)", "range(20)")  # the one-step snippet

    def _expect_raise(fn):
        with pytest.raises(Exception, match="valid range"):
            fn()

    exec(compile(code, "README.md", "exec"), {"_expect_raise": _expect_raise})
