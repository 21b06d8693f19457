"""BENCHMARKS.md says what benchmarks.json gives (``python -m experiments.benchmarks.suite --check``).

The suite's report is computed from the JSON alone (raw per-round seconds -> per-round ratios ->
median, IQR, range, verdict); these tests run that check on the committed files and on tampered
copies, and pin the verdict rule (met / MISSED only when the IQR lies on one side of the target).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.benchmarks import suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def committed() -> tuple[dict, str]:
    data = json.loads((ROOT / "benchmarks.json").read_text())
    return data, (ROOT / "BENCHMARKS.md").read_text()


def _headlines(text: str) -> list[str]:
    start = text.index("## Headlines")
    return [ln for ln in text[start:].split("\n## ")[0].splitlines() if ln.startswith("- ")]


def test_committed_report_matches_json(committed):
    data, text = committed
    assert suite.check(data, text) == []
    assert len(_headlines(text)) >= 10


def test_check_command_passes_on_committed_files(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.suite", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def test_tampered_headline_fails(committed):
    data, text = committed
    line = next(ln for ln in _headlines(text) if re.search(r": \d+\.\d\d \(IQR", ln))
    number = re.search(r": (\d+\.\d\d) \(IQR", line).group(1)
    bumped = f"{float(number) + 0.07:.2f}"
    tampered = text.replace(line, line.replace(f": {number} (IQR", f": {bumped} (IQR", 1))
    assert tampered != text
    problems = suite.check(data, tampered)
    assert problems and "headline differs" in problems[0]


def test_tampered_verdict_fails(committed):
    data, text = committed
    line = next(ln for ln in _headlines(text) if "**" in ln)
    verdict = re.search(r"\*\*([^*]+)\*\*", line).group(1)
    other = "met" if verdict != "met" else "MISSED"
    tampered = text.replace(line, line.replace(f"**{verdict}**", f"**{other}**"))
    assert suite.check(data, tampered)


def test_tampered_json_fails(committed):
    data, text = committed
    bad = copy.deepcopy(data)
    times = bad["parts"]["peers.w1"]["result"]["rows"][0]["times"]["flowjax"]
    times[:] = [2.0 * t for t in times]  # flowjax twice as slow in every round
    assert suite.check(bad, text)


def test_verdict_rule():
    v = suite._verdict
    assert v(1.2, 1.4, 1.1, True) == "met"
    assert v(0.9, 1.05, 1.1, True) == "MISSED"
    assert v(1.0, 1.2, 1.1, True) == "not resolved"
    assert v(1.0, 1.05, 1.1, False) == "met"
    assert v(1.12, 1.3, 1.1, False) == "MISSED"
    assert v(1.05, 1.15, 1.1, False) == "not resolved"


def test_ratio_is_paired_per_round():
    times = {"peer": [2.0, 4.0, 3.0], "flowjax": [1.0, 4.0, 1.0]}
    st = suite._ratio(times, "peer", "flowjax")
    assert (st["median"], st["min"], st["max"], st["rounds"]) == (2.0, 1.0, 3.0, 3)
