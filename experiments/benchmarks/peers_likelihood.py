"""W3 of ``bench_peers``: likelihood of held-out points, flowjax against flow_matching.

:func:`w3_likelihood` gives both sides the same menu: every setting of each side's sweep
(:data:`W3_FLOWJAX`, :data:`W3_PEER`; exact divergence) is run on the same points and weights and
scored against a float64 reference (:func:`reference_log_prob`); then, for each accuracy target
(the peer's Euler 100 and Dopri5 1e-5 errors), each side's fastest setting at least as accurate
is timed against the other's, alternated. :func:`w3_equal_settings` times the same settings on both
sides (exact divergence and Hutchinson). Every timing is stored as raw per-round seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from experiments.benchmarks import peers_torch
from experiments.benchmarks.common import alternate
from flowjax import likelihood as L
from flowjax import models

__all__ = [
    "W3_CASES",
    "W3_DIGITS",
    "W3_FLOWJAX",
    "W3_PEER",
    "reference_log_prob",
    "w3_equal_settings",
    "w3_likelihood",
]

# Each side's menu (exact divergence): name -> (method, fixed steps or None, tolerance or None,
# options). flowjax's "_shared" settings solve the batch as one ODE with the batch-RMS step control
# (the peers' convention); its others solve each point alone.
W3_FLOWJAX: dict[str, tuple] = (
    {"euler_100": ("euler", 100, None, {})}
    | {f"heun_{k}": ("heun", k, None, {}) for k in (4, 8, 16, 32)}
    | {f"midpoint_{k}": ("midpoint", k, None, {}) for k in (8, 16, 32)}
    | {
        f"{m}_{tol:.0e}": (m, None, tol, {})
        for m in ("bosh3", "tsit5", "dopri5")
        for tol in (1e-3, 1e-4, 1e-5)
    }
    | {
        f"{m}_{tol:.0e}_shared": (m, None, tol, {"shared_steps": True})
        for m in ("tsit5", "dopri5")
        for tol in (1e-3, 1e-4, 1e-5)
    }
)
W3_PEER: dict[str, tuple] = (
    {"euler_100": ("euler", 100, None, {})}
    | {f"midpoint_{k}": ("midpoint", k, None, {}) for k in (8, 16, 32)}
    | {f"heun2_{k}": ("heun2", k, None, {}) for k in (4, 8, 16, 32)}
    | {f"rk4_{k}": ("rk4", k, None, {}) for k in (4, 8, 16)}
    | {
        f"{m}_{tol:.0e}": (m, None, tol, {})
        for m in ("bosh3", "dopri5")
        for tol in (1e-3, 1e-4, 1e-5)
    }
)
# the accuracy targets: the peer's errors at these two settings of its menu
W3_TARGETS = ("euler_100", "dopri5_1e-05")
# equal settings on both sides: name -> (divergence, method, steps, tol, flowjax options)
W3_CASES: dict[str, tuple] = {
    "exact_euler_100": ("exact", "euler", 100, None, {}),
    "hutchinson_euler_100": ("hutchinson", "euler", 100, None, {}),
    # one step sequence for the batch on both sides (the peer's only convention)
    "exact_dopri5_1e-5_shared": ("exact", "dopri5", None, 1e-5, {"shared_steps": True}),
}
W3_DIGITS: dict[str, tuple] = {k: W3_CASES[k] for k in ("exact_euler_100", "hutchinson_euler_100")}


def reference_log_prob(model, params, x: np.ndarray) -> np.ndarray:
    """log p(x) of the model with the exact divergence, Dopri5 rtol = atol = 1e-9, float64."""
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        fn = models.model_fn(model, p64)
        res = L.log_likelihood(
            fn, fj.CondOT(), jnp.asarray(x, jnp.float64), solver="dopri5", rtol=1e-9, atol=1e-9
        )
        return np.asarray(res.log_prob, np.float64)


def _error(log_prob: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute error of per-point log-densities (nats)."""
    return float(np.mean(np.abs(np.asarray(log_prob, np.float64) - ref)))


def _flowjax_run(fn, x, divergence: str, method: str, steps, tol, opts: dict) -> Callable:
    path = fj.CondOT()
    kw: dict[str, Any] = dict(divergence=divergence, solver=method, **opts)
    if steps:
        kw["num_steps"] = steps
    else:
        kw |= {"rtol": tol, "atol": tol}

    def run():
        r = L.log_likelihood(fn, path, x, key=jax.random.PRNGKey(0), **kw)
        return np.asarray(jax.block_until_ready(r.log_prob)), int(np.max(np.asarray(r.nfe)))

    return run


def w3_equal_settings(
    peers: dict, model, params, x: np.ndarray, rounds: int, cases=None, ref=None
) -> dict:
    """Each case of ``cases`` (:data:`W3_CASES`) on both sides, alternated over ``rounds``."""
    fn = models.model_fn(model, params)
    torch = peers.get("torch")
    tnet = peers_torch.torch_from_flax(torch, params) if torch is not None else None
    out: dict[str, Any] = {"n": int(x.shape[0]), "dim": int(np.prod(x.shape[1:])), "cases": {}}
    for name, (div, method, steps, tol, opts) in (cases or W3_CASES).items():
        fns = {"flowjax": _flowjax_run(fn, x, div, method, steps, tol, opts)}
        if torch is not None and "flow_matching" in peers:
            fns["flow_matching"] = peers_torch.fm_likelihood(
                torch, tnet, torch.from_numpy(x), div, method, steps, tol
            )
        results = {k: f() for k, f in fns.items()}
        row: dict[str, Any] = {
            "times": alternate(fns, rounds, warmup=0),
            "mean_nll": {k: float(-np.mean(r[0])) for k, r in results.items()},
            "nfe": {k: r[1] for k, r in results.items()},
        }
        if ref is not None:
            row["error"] = {k: _error(r[0], ref) for k, r in results.items()}
        out["cases"][name] = row
    return out


def w3_likelihood(
    peers: dict, model, params, x: np.ndarray, ref: np.ndarray, rounds: int, sweep_rounds: int
) -> dict:
    """The sweep of both menus (error, NFE, the sweep's per-round seconds), the equal-accuracy
    pairs (each side's fastest setting within each target, alternated over ``rounds``) and the
    equal-settings cases."""
    fn = models.model_fn(model, params)
    torch = peers.get("torch")
    runs: dict[str, Callable] = {}
    info: dict[str, dict] = {}
    for name, (method, steps, tol, opts) in W3_FLOWJAX.items():
        runs[f"flowjax/{name}"] = _flowjax_run(fn, x, "exact", method, steps, tol, opts)
        info[f"flowjax/{name}"] = {"side": "flowjax", "setting": name}
    if torch is not None and "flow_matching" in peers:
        tnet = peers_torch.torch_from_flax(torch, params)
        for name, (method, steps, tol, _) in W3_PEER.items():
            runs[f"flow_matching/{name}"] = peers_torch.fm_likelihood(
                torch, tnet, torch.from_numpy(x), "exact", method, steps, tol
            )
            info[f"flow_matching/{name}"] = {"side": "flow_matching", "setting": name}
    for key, run in runs.items():
        lp, nfe = run()
        info[key] |= {"nfe": nfe, "error": _error(lp, ref), "mean_nll": float(-np.mean(lp))}
    sweep = alternate(runs, sweep_rounds, warmup=0)
    for key in runs:
        info[key]["sweep_times"] = sweep[key]
    out: dict[str, Any] = {
        "n": int(x.shape[0]),
        "sweep_rounds": sweep_rounds,
        "settings": info,
        "equal_accuracy": {},
    }

    def fastest(side: str, target: float) -> str | None:
        ok = [k for k in info if info[k]["side"] == side and info[k]["error"] <= target]
        return min(ok, key=lambda k: float(np.median(info[k]["sweep_times"]))) if ok else None

    for t in W3_TARGETS:
        key = f"flow_matching/{t}"
        if key not in info:
            continue
        target = info[key]["error"]
        chosen = {
            "flowjax": fastest("flowjax", target),
            "flow_matching": fastest("flow_matching", target),
        }
        entry: dict[str, Any] = {"target_error": target, "chosen": chosen}
        if all(chosen.values()):
            entry["times"] = alternate({s: runs[k] for s, k in chosen.items()}, rounds, warmup=0)
        out["equal_accuracy"][t] = entry
    out["equal_settings"] = w3_equal_settings(peers, model, params, x, rounds, ref=ref)
    return out
