"""Sampler benchmark: quality against cost for every method, and solver overhead against its limit.

Two measurements (``run(quick)`` returns both as a JSON-serialisable dict):

1. **Quality vs cost** on the Gaussian-mixture oracle (a perfect model, so every gap is the
   sampler's): for each method, the number of model evaluations (NFE), the wall time of a compiled
   call, and the energy distance of its samples to a fresh data sample, beside the finite-sample
   floor (mean and spread of the energy distance between two data samples of the same size).
2. **Solver overhead**: the time of ``N`` fixed Euler steps through :func:`flowjax.sampling.sample`
   over the time of ``N`` bare model evaluations in one jitted loop on the same batch (the limit
   any ``N``-step sampler can reach), for the diffrax and the ``lax.scan`` backends, at batch 1, 64
   and 10,000, with a 4x512 MLP written in plain ``jax.numpy``. Timings alternate the contenders
   within each repeat; ratios are medians over repeats of per-repeat ratios (the machine is
   shared and noisy, so absolute times are indicative only).

Usage::

    python -m experiments.benchmarks.bench_sampling           # full run, prints tables
    python -m experiments.benchmarks.bench_sampling --quick   # a few seconds per table
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import flowjax as fj
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.sampling import SDE, AnnealedLangevin, PredictorCorrector, sample
from flowjax.solvers import Adaptive, Euler

# ---------------------------------------------------------------------- timing helpers


def _block(x: Any) -> Any:
    return jax.block_until_ready(x)


def _time_once(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    _block(fn())
    return time.perf_counter() - t


def _alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, rotating the order every repeat (after a warm-up)."""
    for fn in fns.values():
        _block(fn())
    names = list(fns)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            out[k].append(_time_once(fns[k]))
    return out


# ---------------------------------------------------------------------- a plain-jnp MLP


def init_mlp(key: jax.Array, dim: int = 2, width: int = 512, depth: int = 4) -> list[tuple]:
    """``depth`` hidden layers of ``width`` units; input ``[x, t]``, output ``dim``."""
    sizes = [dim + 1] + [width] * depth + [dim]
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    for k, (a, b) in zip(keys, itertools.pairwise(sizes), strict=True):
        params.append((jax.random.normal(k, (a, b)) / jnp.sqrt(a), jnp.zeros((b,))))
    return params


def mlp_apply(params: list[tuple], x: jax.Array, t: jax.Array) -> jax.Array:
    h = jnp.concatenate([x, t[:, None].astype(x.dtype)], axis=1)
    for w, b in params[:-1]:
        h = jax.nn.silu(h @ w + b)
    w, b = params[-1]
    return h @ w + b


def oracle_apply(mix: fj.GaussianMixture, x: jax.Array, t: jax.Array) -> jax.Array:
    """The 8-Gaussians oracle's CondOT velocity: a model far cheaper than the MLP."""
    return mix.predict("velocity", fj.CondOT(), x, t)


def solver_overhead(
    batch: int, num_steps: int, repeats: int, model: str = "mlp", sde: bool = False
) -> dict[str, Any]:
    """Ratios ``time(N Euler steps) / time(N bare model evaluations)`` for both backends.

    ``model="mlp"``: the 4x512 MLP; ``model="oracle"``: the Gaussian-mixture oracle, cheap enough
    that the solvers' own per-step cost shows. ``sde=True``: Euler-Maruyama with ``sigma = 0.5``
    (the noise draws count as solver cost).
    """
    extra = dict(method=SDE(sigma=0.5)) if sde else {}
    path = fj.CondOT()
    if model == "mlp":
        params, apply = init_mlp(jax.random.PRNGKey(0)), mlp_apply
    else:
        params, apply = fj.oracle.eight_gaussians(), oracle_apply
    key = jax.random.PRNGKey(1)
    x0 = jax.random.normal(key, (batch, 2))

    @jax.jit
    def bare(params, x):
        def body(i, x):
            t = jnp.full((x.shape[0],), i / num_steps, x.dtype)
            return apply(params, x, t)

        return jax.lax.fori_loop(0, num_steps, body, x)

    def program(backend: str):
        # The sampler inside one user-level jit: Python-side validation is paid at trace time.
        @jax.jit
        def run(params, key):
            model = jax.tree_util.Partial(apply, params)
            return sample(
                model, path, key, (batch, 2), num_steps=num_steps, solver=Euler(backend), **extra
            ).samples

        return run

    scan_prog, diffrax_prog = program("scan"), program("diffrax")

    def direct(backend: str):  # sample() called from Python each time (validation included)
        model = jax.tree_util.Partial(apply, params)
        return lambda: sample(
            model, path, key, (batch, 2), num_steps=num_steps, solver=Euler(backend), **extra
        )

    times = _alternate(
        {
            "bare": lambda: bare(params, x0),
            "scan": lambda: scan_prog(params, key),
            "diffrax": lambda: diffrax_prog(params, key),
            "scan_call": direct("scan"),
            "diffrax_call": direct("diffrax"),
        },
        repeats,
    )

    def ratio(name: str) -> float:
        return statistics.median(a / b for a, b in zip(times[name], times["bare"], strict=True))

    return {
        "model": model,
        "method": "sde" if sde else "ode",
        "batch": batch,
        "num_steps": num_steps,
        "repeats": repeats,
        "bare_ms": 1e3 * statistics.median(times["bare"]),
        "scan_ms": 1e3 * statistics.median(times["scan"]),
        "diffrax_ms": 1e3 * statistics.median(times["diffrax"]),
        "scan_ratio": ratio("scan"),
        "diffrax_ratio": ratio("diffrax"),
        "scan_call_ratio": ratio("scan_call"),
        "diffrax_call_ratio": ratio("diffrax_call"),
        "times_ms": {k: [1e3 * x for x in v] for k, v in times.items()},
        "diffrax_over_scan": statistics.median(
            a / b for a, b in zip(times["diffrax"], times["scan"], strict=True)
        ),
    }


# ---------------------------------------------------------------------- quality vs cost

#: (label, keyword arguments of ``sample``) for every method.
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("ode euler N=25", dict(method="ode", solver="euler", num_steps=25)),
    ("ode euler N=100", dict(method="ode", solver="euler", num_steps=100)),
    ("ode euler edm N=25", dict(method="ode", solver="euler", num_steps=25, time_grid="edm")),
    ("ode heun N=25", dict(method="ode", solver="heun", num_steps=25)),
    ("ode midpoint N=25", dict(method="ode", solver="midpoint", num_steps=25)),
    (
        "ode tsit5 adaptive 1e-3",
        dict(method="ode", solver="tsit5", adaptive=Adaptive(rtol=1e-3, atol=1e-3)),
    ),
    ("ode tsit5 adaptive 1e-5", dict(method="ode", solver="tsit5", adaptive=True)),
    ("ode dopri5 adaptive 1e-5", dict(method="ode", solver="dopri5", adaptive=True)),
    ("ode dopri8 adaptive 1e-5", dict(method="ode", solver="dopri8", adaptive=True)),
    ("sde sigma=0.5 euler N=100", dict(method=SDE(sigma=0.5), num_steps=100)),
    ("sde sigma=0.5 euler N=400", dict(method=SDE(sigma=0.5), num_steps=400)),
    ("sde sigma=0.5 shark N=100", dict(method=SDE(sigma=0.5), solver="shark", num_steps=100)),
    (
        "sde sigma=0.5 shark adaptive 1e-2",
        dict(method=SDE(sigma=0.5), solver="shark", adaptive=Adaptive(rtol=1e-2, atol=1e-2)),
    ),
    ("sde reverse euler N=100", dict(method=SDE(sigma="reverse"), num_steps=100)),
    (
        "sde reverse euler edm N=100",
        dict(method=SDE(sigma="reverse"), num_steps=100, time_grid="edm"),
    ),
    (
        "pc reverse+1 corrector N=100",
        dict(method=PredictorCorrector(sigma="reverse", corrector_steps=1), num_steps=100),
    ),
    ("pc ode+1 corrector N=100", dict(method=PredictorCorrector(corrector_steps=1), num_steps=100)),
    ("langevin 100 levels x 5", dict(method=AnnealedLangevin(steps=5), num_steps=100)),
]


def quality(quick: bool, n: int, repeats: int, paths: dict[str, fj.AbstractPath]) -> dict[str, Any]:
    mix = fj.oracle.eight_gaussians()
    ed = jax.jit(energy_distance)
    floor_mean, floor_std = finite_sample_floor(ed, mix.sample, jax.random.PRNGKey(100), n, 5)
    data = mix.sample(jax.random.PRNGKey(101), n)
    configs = CONFIGS if not quick else [c for i, c in enumerate(CONFIGS) if i % 3 == 0]
    rows = []
    for path_name, path in paths.items():
        fn = mix.model_fn(path, "velocity")
        for label, kw in configs:
            key = jax.random.PRNGKey(7)

            def call(fn=fn, path=path, key=key, kw=kw):
                return sample(fn, path, key, (n, 2), **kw)

            res = call()
            wall = _alternate({"s": call}, repeats)
            rows.append(
                {
                    "path": path_name,
                    "method": label,
                    "nfe": int(res.nfe),
                    "rejected": int(res.num_rejected),
                    "wall_ms": 1e3 * statistics.median(wall["s"]),
                    "energy_distance": float(ed(res.samples, data)),
                }
            )
    return {
        "dataset": "eight_gaussians",
        "n": n,
        "floor_mean": float(floor_mean),
        "floor_std": float(floor_std),
        "rows": rows,
    }


# ---------------------------------------------------------------------- entry points


def run(quick: bool = False) -> dict[str, Any]:
    """Run both benchmarks; returns a JSON-serialisable dict."""
    if quick:
        # 7 rounds even here: the overhead ratios are headlines (issue 19: >= 7 rounds)
        overhead_cfg = [(1, 100, 7), (64, 100, 7), (10_000, 10, 7)]
        paths = {"condot": fj.CondOT()}
        qual = quality(True, 1000, 3, paths)
    else:
        overhead_cfg = [(1, 200, 15), (64, 200, 15), (10_000, 20, 7)]
        paths = {"condot": fj.CondOT(), "vp_linear": fj.VPLinear(), "ve": fj.VE()}
        qual = quality(False, 2000, 5, paths)
    overhead = [solver_overhead(b, n, r, "mlp") for b, n, r in overhead_cfg]
    for sde in (False, True):
        overhead += [solver_overhead(b, 200, 3 * r, "oracle", sde) for b, _, r in overhead_cfg]
    return {
        "benchmark": "sampling",
        "quick": quick,
        "device": str(jax.devices()[0].platform),
        "overhead": overhead,
        "quality": qual,
    }


def _print(result: dict[str, Any]) -> None:
    print("Solver overhead: time(N Euler steps) / time(N bare model evaluations in one jit)")
    print("  (prog: sampler inside a user jit; call: sample() from Python each time)")
    hdr = f"{'model':>6} {'method':>6} {'batch':>7} {'N':>5} {'bare ms':>9} {'scan':>7} {'diffrax':>8} {'scan call':>10} {'dfx call':>9} {'dfx/scan':>9}"
    print(hdr)
    for r in result["overhead"]:
        print(
            f"{r['model']:>6} {r['method']:>6} {r['batch']:>7} {r['num_steps']:>5} {r['bare_ms']:>9.3f} {r['scan_ratio']:>7.3f} "
            f"{r['diffrax_ratio']:>8.3f} {r['scan_call_ratio']:>10.3f} "
            f"{r['diffrax_call_ratio']:>9.3f} {r['diffrax_over_scan']:>9.3f}"
        )
    q = result["quality"]
    print(
        f"\nQuality vs cost on {q['dataset']} (n = {q['n']}); energy-distance floor "
        f"{q['floor_mean']:.4f} +- {q['floor_std']:.4f}"
    )
    print(f"{'path':<10} {'method':<36} {'NFE':>6} {'rej':>4} {'wall ms':>9} {'energy d.':>10}")
    for r in q["rows"]:
        print(
            f"{r['path']:<10} {r['method']:<36} {r['nfe']:>6} {r['rejected']:>4} "
            f"{r['wall_ms']:>9.2f} {r['energy_distance']:>10.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--json", help="also write the result dict to this file")
    args = parser.parse_args()
    result = run(args.quick)
    _print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
