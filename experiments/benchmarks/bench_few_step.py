"""Few-step solvers: sample quality against the number of model evaluations (issue 15).

Every solver of the few-step regime (Euler, Heun, midpoint, DPM-Solver++ 2M / 3M / 2S, UniPC-bh2
of order 2 and 3) on every grid (uniform in ``t``, uniform in log-SNR, EDM's rho = 7) at NFE 4, 6,
8, 10, 15 and 20, on two paths (CondOT and VP-linear) and two data sets whose exact model is the
Gaussian-mixture oracle (so every gap is the solver's, none the network's):

* ``eight_gaussians``: :func:`flowjax.oracle.eight_gaussians` (radius 4, std 0.5).
* ``checkerboard``: the toy checkerboard's 8 squares, each filled by a 4 x 4 lattice of isotropic
  Gaussians of std 0.25 (128 components): nearly uniform on the squares, with the oracle exact.

Metrics, all from the same prior draws (``x_start``, so every solver starts from the same points):

* energy distance and sliced W2 (:mod:`flowjax.distances`) to a fresh sample of the mixture, beside
  their finite-sample floors (mean +- std of the statistic between two samples of the mixture);
* the flow-map error: RMS over samples of ``|x - x*|``, with ``x*`` the same start solved by
  adaptive Tsit5 at ``rtol = atol = 1e-8`` over the same time range. It keeps resolving solvers
  once the distances reach their floors.

With a 2-stage solver (Heun, midpoint, 2S) the step count is ``NFE // 2``: at NFE 15 these take
7 steps (14 evaluations); the table reports the NFE actually made. The sampling ranges are
:func:`flowjax.sampling.sampling_time_range`'s defaults (2S and EDM's sampler keep clear of
``alpha = 0`` / ``beta = 0``; the others run over the path's whole range).

Optionally (``--nll``, on in the full run) the likelihood side: the error of ``log p(x)`` against
NFE for the fixed-grid Runge-Kutta solvers that :func:`flowjax.likelihood.log_likelihood` accepts,
against a tight adaptive solve (the exponential integrators do not integrate the augmented ODE).

Runs eagerly (``jax.disable_jit``): a compiled sampler per (solver, grid, step count) would spend
several seconds compiling each of the ~600 configurations for a run of milliseconds; op-by-op
dispatch reuses every primitive across them. The references and the distances are compiled.

Usage::

    python -m experiments.benchmarks.bench_few_step             # full run, a few minutes on CPU
    python -m experiments.benchmarks.bench_few_step --quick     # under a minute
    python -m experiments.benchmarks.bench_few_step --json few_step.json   # also the raw rows

The printed tables are markdown (the "Few-step solvers" section of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from experiments.benchmarks.common import log
from flowjax import solvers
from flowjax.distances import energy_distance, finite_sample_floor, sliced_wasserstein
from flowjax.likelihood import log_likelihood
from flowjax.sampling import sample, sampling_time_range

NFES = (4, 6, 8, 10, 15, 20)
SOLVERS = ("euler", "heun", "midpoint", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "unipc", "unipc_3")
#: Variants beside the shortcuts: third order with the last steps lowered (DPM-Solver's practice
#: below 15 steps; off by default in flowjax).
VARIANTS: dict[str, solvers.AbstractSolver] = {
    "dpmpp_3m+lof": solvers.DPMSolverPP(order=3, lower_order_final=True),
    "unipc_3+lof": solvers.UniPC(order=3, lower_order_final=True),
}
GRIDS = ("uniform", "logsnr", "edm")
PATHS = {"condot": fj.CondOT(), "vp_linear": fj.VPLinear()}
NLL_SOLVERS = ("euler", "heun", "midpoint", "bosh3", "tsit5")
_TIGHT = solvers.Adaptive(rtol=1e-8, atol=1e-8, max_steps=100_000)


def checkerboard_mixture(per_side: int = 4) -> fj.GaussianMixture:
    """The checkerboard's 8 squares (``[-4 + 2i, -2 + 2i] x [-4 + 2j, -2 + 2j]``, ``i + j`` even), each
    covered by a ``per_side x per_side`` lattice of Gaussians with std half the lattice spacing."""
    cells = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    offsets = (np.arange(per_side) + 0.5) * 2.0 / per_side
    means = np.array(
        [[2 * i - 4 + a, 2 * j - 4 + b] for i, j in cells for a in offsets for b in offsets]
    )
    std = 1.0 / per_side
    return fj.GaussianMixture(np.ones(len(means)), means, np.full(means.shape, std**2))


DATASETS = {"eight_gaussians": fj.oracle.eight_gaussians, "checkerboard": checkerboard_mixture}


def _solver(label: str) -> str | solvers.AbstractSolver:
    return VARIANTS.get(label, label)


def _steps(solver: str, nfe: int) -> int | None:
    """Grid intervals for ``nfe`` evaluations (``None`` when the solver cannot take that few)."""
    obj = solvers.get_solver(_solver(solver))
    per_step = int(obj.nfe(2)) - int(obj.nfe(1))
    n = (nfe - (int(obj.nfe(1)) - per_step)) // per_step
    min_steps = getattr(obj, "min_steps", 1)
    return n if n >= min_steps else None


class _Reference:
    """Prior draws per time range and their exact (tight adaptive) ODE solutions, cached."""

    def __init__(self, mix: fj.GaussianMixture, path: fj.AbstractPath, eps: jax.Array):
        self.mix, self.path, self.eps = mix, path, eps
        self._cache: dict[tuple[float, float], tuple[jax.Array, jax.Array]] = {}

    def get(self, t0: float, t1: float) -> tuple[jax.Array, jax.Array]:
        if (t0, t1) not in self._cache:
            x0 = self.path.beta(jnp.asarray(t0)) * self.eps
            ref = sample(
                self.mix.model_fn(self.path), self.path, None, None, x_start=x0, solver="tsit5",
                adaptive=_TIGHT, t_start=t0, t_end=t1,
            ).samples  # fmt: skip
            self._cache[(t0, t1)] = (x0, jax.block_until_ready(ref))
        return self._cache[(t0, t1)]


_log = log


def quality(
    quick: bool,
    n: int,
    datasets: tuple[str, ...],
    paths: tuple[str, ...],
    solver_names: tuple[str, ...],
    grids: tuple[str, ...],
    nfes: tuple[int, ...],
) -> dict[str, Any]:
    """Energy distance, sliced W2 and flow-map error of every configuration."""
    ed = jax.jit(energy_distance)
    sw_key = jax.random.PRNGKey(11)
    sw = jax.jit(lambda a, b: sliced_wasserstein(a, b, sw_key))
    out: dict[str, Any] = {"n": n, "floors": {}, "rows": []}
    for dname in datasets:
        mix = DATASETS[dname]()
        ed_floor = finite_sample_floor(ed, mix.sample, jax.random.PRNGKey(100), n, 5)
        sw_floor = finite_sample_floor(sw, mix.sample, jax.random.PRNGKey(100), n, 5)
        out["floors"][dname] = {
            "energy": [float(ed_floor[0]), float(ed_floor[1])],
            "sliced_w2": [float(sw_floor[0]), float(sw_floor[1])],
        }
        data = mix.sample(jax.random.PRNGKey(101), n)
        eps = jax.random.normal(jax.random.PRNGKey(7), (n, 2))
        for pname in paths:
            _log(f"{dname}, {pname}")
            path = PATHS[pname]
            refs = _Reference(mix, path, eps)
            fn = mix.model_fn(path)
            for solver in solver_names:
                t0, t1 = sampling_time_range(path, solver=solvers.get_solver(_solver(solver)))
                x0, x_ref = refs.get(t0, t1)
                for grid in grids:
                    for target in nfes:
                        steps = _steps(solver, target)
                        if steps is None:
                            continue
                        with jax.disable_jit():
                            res = sample(
                                fn, path, None, None, x_start=x0, solver=_solver(solver),
                                num_steps=steps, time_grid=grid, t_start=t0, t_end=t1,
                            )  # fmt: skip
                        x = jax.block_until_ready(res.samples)
                        err = jnp.sqrt(jnp.mean(jnp.sum((x - x_ref) ** 2, axis=-1)))
                        out["rows"].append(
                            {
                                "dataset": dname,
                                "path": pname,
                                "solver": solver,
                                "grid": grid,
                                "target_nfe": target,
                                "nfe": int(res.nfe),
                                "energy_distance": float(ed(x, data)),
                                "sliced_w2": float(sw(x, data)),
                                "flow_error": float(err),
                                "finite": bool(jnp.all(jnp.isfinite(x))),
                            }
                        )
    return out


def likelihood(n: int, nfes: tuple[int, ...]) -> dict[str, Any]:
    """``log p(x)`` error against NFE for the likelihood's fixed-grid solvers (CondOT, 8-Gaussians)."""
    mix, path = fj.oracle.eight_gaussians(), fj.CondOT()
    fn = mix.model_fn(path)
    x = mix.sample(jax.random.PRNGKey(5), n)
    ref = log_likelihood(fn, path, x, rtol=1e-8, atol=1e-8, max_steps=100_000).log_prob
    exact = mix.data_log_prob(x)
    rows = []
    for solver in NLL_SOLVERS:
        obj = solvers.get_solver(solver)
        seen = set()
        for target in nfes:
            steps = max(1, target // int(obj.nfe(1)))
            if steps in seen:
                continue
            seen.add(steps)
            res = log_likelihood(fn, path, x, solver=solver, num_steps=steps)
            lp = jax.block_until_ready(res.log_prob)
            rows.append(
                {
                    "solver": solver,
                    "target_nfe": target,
                    "nfe": int(res.nfe[0]),
                    "mean_abs_error": float(jnp.mean(jnp.abs(lp - ref))),
                    "mean_error": float(jnp.mean(lp - ref)),
                }
            )
    return {
        "dataset": "eight_gaussians",
        "path": "condot",
        "n": n,
        "reference_gap_to_exact": float(jnp.mean(jnp.abs(ref - exact))),
        "rows": rows,
    }


def run(quick: bool = False, nll: bool | None = None) -> dict[str, Any]:
    """The benchmark as a JSON-serialisable dict (``quick``: one data set, path and few configs)."""
    start = time.perf_counter()
    if quick:
        qual = quality(
            True, 500, ("eight_gaussians",), ("condot",), ("euler", "heun", "dpmpp_2m", "unipc"),
            ("uniform", "logsnr"), (4, 10),
        )  # fmt: skip
    else:
        names = SOLVERS + tuple(VARIANTS)
        qual = quality(False, 2000, tuple(DATASETS), tuple(PATHS), names, GRIDS, NFES)
    result: dict[str, Any] = {
        "benchmark": "few_step",
        "quick": quick,
        "device": str(jax.devices()[0].platform),
        "quality": qual,
    }
    if nll if nll is not None else not quick:
        _log("likelihood")
        result["likelihood"] = likelihood(256, NFES)
    result["seconds"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------- reports


def _cell(rows: list[dict], key: str, scale: float) -> str:
    if not rows:
        return "-"
    r = rows[0]
    val = f"{r[key] * scale:.2f}" if r["finite"] else "nan"
    return val if r["nfe"] == r["target_nfe"] else f"{val} ({r['nfe']})"


def tables(result: dict[str, Any], metric: str = "energy_distance", scale: float = 1e3) -> str:
    """Markdown tables: per data set and path, rows solver x grid, columns NFE."""
    q = result["quality"]
    rows = q["rows"]
    nfes = sorted({r["target_nfe"] for r in rows})
    lines = []
    for dname in dict.fromkeys(r["dataset"] for r in rows):
        for pname in dict.fromkeys(r["path"] for r in rows if r["dataset"] == dname):
            sub = [r for r in rows if r["dataset"] == dname and r["path"] == pname]
            lines += [
                f"{dname}, {pname}: {metric} x {scale:g}",
                "",
                "| solver | grid | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
                "|---|---|" + "---|" * len(nfes),
            ]
            for solver in dict.fromkeys(r["solver"] for r in sub):
                for grid in dict.fromkeys(r["grid"] for r in sub if r["solver"] == solver):
                    cells = [
                        _cell(
                            [
                                r
                                for r in sub
                                if r["solver"] == solver
                                and r["grid"] == grid
                                and r["target_nfe"] == k
                            ],
                            metric,
                            scale,
                        )
                        for k in nfes
                    ]
                    lines.append(f"| {solver} | {grid} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def floors(result: dict[str, Any]) -> str:
    q = result["quality"]
    out = []
    for dname, f in q["floors"].items():
        e, s = f["energy"], f["sliced_w2"]
        out.append(
            f"{dname} (n = {q['n']}): energy-distance floor {e[0] * 1e3:.2f} +- {e[1] * 1e3:.2f} "
            f"(x 1e3), sliced-W2 floor {s[0] * 1e3:.1f} +- {s[1] * 1e3:.1f} (x 1e3)"
        )
    return "\n".join(out)


def nll_table(result: dict[str, Any]) -> str:
    lk = result["likelihood"]
    nfes = sorted({r["target_nfe"] for r in lk["rows"]})
    lines = [
        f"log-likelihood: mean |log p - log p*| (nats) on {lk['dataset']}, {lk['path']}, "
        f"n = {lk['n']} (log p*: adaptive dopri5 at 1e-8, itself "
        f"{lk['reference_gap_to_exact']:.1e} from the exact log-density)",
        "",
        "| solver | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
        "|---|" + "---|" * len(nfes),
    ]
    for solver in dict.fromkeys(r["solver"] for r in lk["rows"]):
        cells = []
        for k in nfes:
            rs = [r for r in lk["rows"] if r["solver"] == solver and r["target_nfe"] == k]
            if not rs:
                cells.append("-")
                continue
            r = rs[0]
            val = f"{r['mean_abs_error']:.2e}"
            cells.append(val if r["nfe"] == k else f"{val} ({r['nfe']})")
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _top(rows: list[dict]) -> dict | None:
    return min(rows, key=lambda r: r["flow_error"]) if rows else None


def best(result: dict[str, Any]) -> str:
    """Per data set, path and NFE: the configuration with the smallest flow-map error, beside the
    best Euler and Heun (any grid) at that NFE."""
    rows = [r for r in result["quality"]["rows"] if r["finite"]]
    nfes = sorted({r["target_nfe"] for r in rows})
    lines = [
        "Smallest flow-map error (x 1e3) at each NFE: best configuration / best Euler / best Heun",
        "",
        "| data, path | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
        "|---|" + "---|" * len(nfes),
    ]
    for dname in dict.fromkeys(r["dataset"] for r in rows):
        for pname in dict.fromkeys(r["path"] for r in rows if r["dataset"] == dname):
            cells = []
            for k in nfes:
                sub = [
                    r
                    for r in rows
                    if r["dataset"] == dname and r["path"] == pname and r["target_nfe"] == k
                ]
                b = _top(sub)
                e = _top([r for r in sub if r["solver"] == "euler"])
                h = _top([r for r in sub if r["solver"] == "heun"])
                text = f"{b['solver']}/{b['grid']} {b['flow_error'] * 1e3:.0f}"
                for base in (e, h):
                    text += f" / {base['flow_error'] * 1e3:.0f}" if base else " / -"
                cells.append(text)
            lines.append(f"| {dname}, {pname} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(result: dict[str, Any], sliced: bool = True) -> str:
    parts = [
        floors(result),
        "",
        best(result),
        tables(result, "energy_distance", 1e3),
        tables(result, "flow_error", 1e3),
    ]
    if sliced:
        parts.append(tables(result, "sliced_w2", 1e3))
    if "likelihood" in result:
        parts += [nll_table(result), ""]
    parts.append(f"({result['seconds']:.0f} s)")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one data set and path, < 1 min")
    parser.add_argument("--nll", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--json", help="also write the result dict to this file")
    args = parser.parse_args()
    result = run(args.quick, args.nll)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
