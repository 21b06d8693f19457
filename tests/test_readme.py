"""The README's quick-start test command is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    test_cmds = [line for b in blocks for line in b.splitlines() if "pytest" in line]
    assert len(test_cmds) == 1, test_cmds
    install, test = test_cmds[0].rsplit(" && ", 1)
    assert install in ci.splitlines(), f"CI does not install as the README says: {install}"
    assert any(line.startswith(test) for line in ci.splitlines()), f"CI does not run: {test}"
