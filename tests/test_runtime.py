"""experiments/runtime.py: the once-only re-execution with glibc's huge-page tunable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import chex

from experiments import runtime

ROOT = Path(__file__).resolve().parents[1]


def _supported() -> bool:
    return runtime.tuned_environment({}) is not None


def test_opt_out_and_already_set_change_nothing():
    assert runtime.tuned_environment({"FLOWJAX_CPU_TUNING": "0"}) is None
    assert runtime.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None


def test_other_tunables_are_kept(monkeypatch):
    # the platform checks are forced true so the environment logic runs on any machine
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.setattr(runtime, "_glibc_at_least", lambda major, minor: True)
    monkeypatch.setattr(runtime, "_thp_usable", lambda: True)
    env = runtime.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
    assert env is not None
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{runtime.TUNABLE}"
    assert env["A"] == "b"
    assert runtime.tuned_environment({})["GLIBC_TUNABLES"] == runtime.TUNABLE
    # and each platform condition alone turns it off
    monkeypatch.setattr(runtime, "_thp_usable", lambda: False)
    assert runtime.tuned_environment({}) is None
    monkeypatch.setattr(runtime, "_thp_usable", lambda: True)
    monkeypatch.setattr(runtime, "_glibc_at_least", lambda major, minor: False)
    assert runtime.tuned_environment({}) is None


def test_reexec_runs_the_same_command_once_with_the_tunable():
    code = (
        "import os, sys; sys.path.insert(0, os.getcwd()); "
        "print('start', flush=True); "
        "from experiments.runtime import reexec_with_cpu_tuning; reexec_with_cpu_tuning(); "
        "print('tunables', os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "FLOWJAX_CPU_TUNING")}
    out = subprocess.run(
        [sys.executable, "-c", code, "arg1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    expected = runtime.TUNABLE if _supported() else None
    chex.assert_equal(out[-1], f"tunables {expected} ['arg1']")
    # re-executed once (two 'start' lines) where supported, never more
    chex.assert_equal(out.count("start"), 2 if _supported() else 1)
