"""Process-level tuning for XLA on CPU (standard library only, so it runs before JAX is imported).

XLA:CPU allocates an executable's temporary buffer on every call. For a training step on a large
batch that buffer is tens to hundreds of MiB (104 MiB for the 4x512 MLP of the benchmarks at batch
4096), above glibc's largest mmap threshold (32 MiB), so every step maps fresh memory and the kernel
faults in and zeroes it 4 KiB at a time: ~32,000 page faults and ~15% of that step on 2 cores.
With glibc >= 2.35, ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` asks for transparent huge pages on
such mappings (2 MiB per fault; measured ~170 faults per step). glibc reads the tunable once, at
process start, so the command-line entry points (``experiments.main``, the benchmark suite) call
:func:`reexec_with_cpu_tuning` first: it re-executes the same command once with the tunable set.
``FLOWJAX_CPU_TUNING=0`` turns this off; in your own scripts, export the variable yourself.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
_OPT_OUT = "FLOWJAX_CPU_TUNING"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_at_least(major: int, minor: int) -> bool:
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return False
    try:
        got = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return got >= (major, minor)


def _thp_usable() -> bool:
    """Transparent huge pages are ``always`` or ``madvise`` (not ``never``, not absent)."""
    try:
        with open(_THP) as f:
            mode = f.read()
    except OSError:
        return False
    return "[never]" not in mode


def tuned_environment(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with, or ``None`` when nothing would change.

    ``None`` when: not Linux with glibc >= 2.35, transparent huge pages are off, the user opted
    out (``FLOWJAX_CPU_TUNING=0``), or ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb``.
    Other tunables already set are kept.
    """
    env = dict(os.environ if env is None else env)
    if env.get(_OPT_OUT, "1") == "0" or sys.platform != "linux":
        return None
    current = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return None
    if not (_glibc_at_least(2, 35) and _thp_usable()):
        return None
    env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
    return env


def reexec_with_cpu_tuning() -> None:
    """Re-execute this command once with :data:`TUNABLE` set (see the module docstring).

    Returns without doing anything where :func:`tuned_environment` is ``None``; otherwise it does
    not return (``os.execve`` keeps the process id, so launchers and signals are unaffected).
    """
    env = tuned_environment()
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
