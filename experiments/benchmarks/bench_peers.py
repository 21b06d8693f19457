"""flowjax side by side with the PyTorch peers (facebookresearch/flow_matching, torchcfm, torchdiffeq).

Every timed comparison runs the sides on the same inputs (and, where weights matter, the same
weights), alternating them round by round over ``ROUNDS`` rounds; what is stored is the raw
seconds of every round (``times``), from which the suite's report computes each ratio as the median
of the per-round ratios with its quartiles and range. Workloads (issue 10, like for like: issue 19):

* ``limit``: the float32 matmul rate of this machine (JAX and torch), the peak for W1's fraction.
* ``w1`` training: 2-D checkerboard; MLP 3 -> 4 x 512 SiLU -> 2 on ``[x, t]``; Adam 1e-3; CondOT;
  batch 4096 and 256. Every side computes the step in one pass (the headline) and, at batch 4096,
  also with the gradient accumulated over 4 micro-batches of 1024 (flowjax ``grad_accum_steps``;
  torch: one backward per micro-batch, one Adam step). Peers use their own path APIs
  (``AffineProbPath(CondOTScheduler())``, ``ConditionalFlowMatcher(sigma=0)``) and torch Adam.
* ``w2`` sampling: one trained model (flowjax weights copied into the torch network); each side
  runs its whole menu of solvers on the same 2,000 starting points (flowjax: Euler, midpoint, Heun,
  Bosh3, Tsit5, Dopri5; torchdiffeq and flow_matching's ``ODESolver``: Euler, midpoint, Heun2,
  Heun3, RK4, Bosh3, Dopri5; fixed steps and tolerances 1e-3..1e-5), with energy distance, sliced
  W2 and the flow-map error against a float64 solve. Headlines: Euler 100 on every side, and each
  side's fastest setting at the peers' best quality; flowjax's few-step solvers (DPM-Solver++,
  UniPC) as separate rows. Latency at batch 1 and 64 (Euler 20).
* ``w3`` likelihood (:mod:`peers_likelihood`): equal settings, and equal accuracy with each side's
  fastest setting of its own sweep against a float64 reference.
* ``w4`` ground truth: each side trains on the 8-Gaussians ring with the peers' recipe (constant
  Adam) and with flowjax's (cosine decay + EMA, written in PyTorch for the peers), 3 seeds, the same
  initial weights and batches; the NLL gap to the oracle, all evaluated by one exact likelihood.

Peers are optional: without torch the flowjax sides still run and the peer columns say so.
Run: ``python -m experiments.benchmarks.bench_peers [--quick] [--workloads w1 w4] [--json F]``;
the suite (``python -m experiments.benchmarks.suite --only peers.w4``) merges the results into
``benchmarks.json`` and writes the report.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from experiments.benchmarks import peers_torch
from experiments.benchmarks.common import alternate
from experiments.benchmarks.peers_likelihood import (
    W3_DIGITS,
    reference_log_prob,
    w3_equal_settings,
    w3_likelihood,
)
from experiments.benchmarks.peers_torch import DEPTH, THREADS, WIDTH
from flowjax import likelihood as L
from flowjax import losses, models
from flowjax import training as T

# Rounds of every timed comparison (issue 19: at least 7, the sides alternated)
ROUNDS = 7
# W1's micro-batch size: a [1024, 512] activation is 2 MiB, so each layer's matmul, SiLU and their
# gradients stay in cache (its effect is W1's accumulated row, in BENCHMARKS.md)
MICROBATCH = 1024


# ----------------------------------------------------------------------------- flowjax side


def _flowjax_model():
    return models.MLP(hidden=(WIDTH,) * DEPTH, activation="silu", time_embedding="none")


def _init_params(seed: int = 0) -> Any:
    return models.init(_flowjax_model(), jax.random.PRNGKey(seed), jnp.zeros((1, 2)))


def _flowjax_trainer(
    *,
    params: Any = None,
    recipe: str = "plain",
    total: int = 1,
    grad_accum_steps: int = 1,
    seed: int = 0,
):
    """(model, step, state): ``recipe="plain"``: Adam 1e-3, no EMA (the peers' recipe);
    ``"cosine_ema"``: cosine decay to 0 over ``total`` steps and an EMA (0.999, with warm-up)."""
    model = _flowjax_model()
    params = _init_params(seed) if params is None else params
    loss_fn = losses.make_loss(models.make_apply_fn(model), fj.CondOT(), t_margin=0.0)
    cosine = recipe == "cosine_ema"
    opt = T.make_optimizer(
        "adam", 1e-3, schedule="cosine" if cosine else "constant", total_steps=max(total, 1)
    )
    step = T.make_train_step(
        loss_fn,
        opt,
        mesh=T.make_mesh(),
        ema_decay=0.999 if cosine else None,
        ema_warmup=cosine,
        grad_accum_steps=grad_accum_steps,
    )
    state = step.place_state(
        T.create_train_state(params, opt, jax.random.PRNGKey(1000 + seed), ema=cosine)
    )
    return model, step, state


def _step_runner(step, state, placed: list) -> Callable[[int], None]:
    """``run(n)``: ``n`` train steps cycling through ``placed`` batches, then block."""
    holder = {"state": state}

    def run(n: int) -> None:
        s = holder["state"]
        for i in range(n):
            s, _ = step(s, placed[i % len(placed)])
        jax.block_until_ready(s)
        holder["state"] = s

    return run


def _data(name: str, key: jax.Array, n: int) -> np.ndarray:
    return np.array(fj.data.toy_sample(name, key, n), np.float32)


def _flowjax_train(dataset: str, steps: int, batch: int, *, recipe: str, seed: int) -> Any:
    """flowjax parameters after ``steps`` steps on ``dataset`` (EMA ones for ``cosine_ema``);
    batch ``i`` is ``toy_sample(dataset, fold_in(PRNGKey(7 + seed), i), batch)`` (as the peers)."""
    _, step, state = _flowjax_trainer(
        recipe=recipe, total=steps, grad_accum_steps=max(1, batch // MICROBATCH), seed=seed
    )
    sample = jax.jit(lambda k: fj.data.toy_sample(dataset, k, batch))
    key = jax.random.PRNGKey(7 + seed)
    for i in range(steps):
        x = np.asarray(sample(jax.random.fold_in(key, i)))
        state, _ = step(state, step.shard_batch({"x": x}))
    return jax.device_get(state.ema_params if recipe == "cosine_ema" else state.params)


def _torch_train(peers, peer, dataset, steps, batch, *, recipe: str, seed: int) -> Any:
    """The peer's training of the same network from flowjax's initial weights for ``seed``, on
    the same batches; returns flowjax parameters holding the trained (or EMA) torch weights."""
    torch = peers["torch"]
    init = _init_params(seed)
    net = peers_torch.torch_from_flax(torch, init)
    torch.manual_seed(seed)
    step, weights = peers_torch.torch_train_step(
        torch, net, peers_torch.peer_pair(torch, peer), recipe=recipe, total=steps
    )
    sample = jax.jit(lambda k: fj.data.toy_sample(dataset, k, batch))
    key = jax.random.PRNGKey(7 + seed)
    for i in range(steps):
        step(torch.from_numpy(np.array(sample(jax.random.fold_in(key, i)))))
    return peers_torch.flax_from_torch(weights(), jax.device_get(init))


# ----------------------------------------------------------------------------- trained model

_CACHE = os.environ.get(
    "FLOWJAX_BENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "flowjax-bench")
)


def _cached(name: str, make: Callable[[], Any]) -> Any:
    """``make()``, pickled under ``$FLOWJAX_BENCH_CACHE`` (default ~/.cache/flowjax-bench) by
    ``name``: W2 and W3 train one model and compute one float64 reference, then reuse them."""
    path = os.path.join(_CACHE, name + ".pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    value = make()
    os.makedirs(_CACHE, exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        pickle.dump(value, f)
    os.replace(path + ".tmp", path)
    return value


def trained_checkerboard(steps: int, batch: int = 1024) -> tuple[Any, Any, dict]:
    """The W2/W3 model: flowjax, plain Adam, ``steps`` steps at ``batch`` on the checkerboard
    (cached); returns (model, params, description)."""
    params = _cached(
        f"checkerboard_{steps}_{batch}",
        lambda: _flowjax_train("checkerboard", steps, batch, recipe="plain", seed=0),
    )
    flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(params)])
    desc = {
        "steps": steps,
        "batch": batch,
        "recipe": "plain Adam 1e-3 (flowjax)",
        "weights_checksum": float(np.sum(np.abs(flat.astype(np.float64)))),
    }
    return _flowjax_model(), params, desc


# ----------------------------------------------------------------------------- limit


def part_limit(quick: bool, peers: dict) -> dict:
    """float32 GFLOP/s of a [4096, 512] x [512, 512] matmul (the MLP's hidden layer), JAX and
    torch, alternated; the peak is the fastest round of either."""
    a = jax.random.normal(jax.random.PRNGKey(0), (4096, 512))
    b = jax.random.normal(jax.random.PRNGKey(1), (512, 512))
    reps = 50
    f = jax.jit(lambda a, b: jax.lax.fori_loop(0, reps, lambda i, c: (c @ b) * 1e-3, a))
    jax.block_until_ready(f(a, b))
    fns: dict[str, Callable[[], Any]] = {"jax": lambda: jax.block_until_ready(f(a, b))}
    torch = peers.get("torch")
    if torch is not None:
        ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))

        def tmm():
            c = ta
            for _ in range(reps):
                c = (c @ tb) * 1e-3
            return c

        tmm()
        fns["torch"] = tmm
    times = alternate(fns, ROUNDS, warmup=0)
    return {"gflop_per_call": 2.0 * 4096 * 512 * 512 * reps / 1e9, "times": times}


# ----------------------------------------------------------------------------- W1 training


def _mlp_flops(batch: int) -> float:
    """Multiply-add FLOPs of one forward pass (2 per MAC); backward costs twice the forward."""
    macs = 3 * WIDTH + (DEPTH - 1) * WIDTH * WIDTH + WIDTH * 2
    return 2.0 * batch * macs


def w1_case(peers: dict, batch: int, steps: int, warmup: int, rounds: int) -> dict:
    """Steps of every side on the same batches, alternated: each side in one pass, and (at
    batches above ``MICROBATCH``) each side accumulating the gradient over micro-batches of
    ``MICROBATCH`` (``_accum``; flowjax's ``grad_accum_steps``, torch: backward per micro-batch)."""
    pool = [_data("checkerboard", jax.random.PRNGKey(100 + i), batch) for i in range(8)]
    accum = max(1, batch // MICROBATCH)
    fns: dict[str, Callable[[], None]] = {}
    for k in sorted({1, accum}):
        _, step, state = _flowjax_trainer(grad_accum_steps=k)
        placed = [step.shard_batch({"x": b}) for b in pool]
        run_flowjax = _step_runner(step, state, placed)
        run_flowjax(warmup)
        fns["flowjax" + (f"_accum{k}" if k > 1 else "")] = functools.partial(run_flowjax, steps)
    torch = peers.get("torch")
    if torch is not None:
        tpool = [torch.from_numpy(b.copy()) for b in pool]
        for peer in ("flow_matching", "torchcfm"):
            if peer not in peers:
                continue
            for k in sorted({1, accum}):
                net = peers_torch.torch_from_flax(torch, _init_params(0))
                torch.manual_seed(0)
                step_t, _ = peers_torch.torch_train_step(
                    torch, net, peers_torch.peer_pair(torch, peer), accum=k
                )

                def run_t(n: int, step_t=step_t) -> None:
                    for i in range(n):
                        step_t(tpool[i % len(tpool)])

                run_t(warmup)
                fns[peer + (f"_accum{k}" if k > 1 else "")] = functools.partial(run_t, steps)
    return {
        "batch": batch,
        "microbatch": MICROBATCH,
        "accum": accum,
        "steps_per_round": steps,
        "gflop_per_step": 3 * _mlp_flops(batch) / 1e9,
        "times": alternate(fns, rounds, warmup=0),
    }


def part_w1(quick: bool, peers: dict) -> dict:
    steps, warmup = (2, 1) if quick else (12, 4)
    return {
        "rows": [
            w1_case(peers, 4096, steps, warmup, ROUNDS),
            w1_case(peers, 256, steps * 8, warmup * 4, ROUNDS),
        ]
    }


# ----------------------------------------------------------------------------- W2 sampling

# (method, fixed steps or None, tolerance or None); one menu per side: every solver it offers
W2_FLOWJAX = (
    [("euler", k, None) for k in (25, 50, 100)]
    + [("midpoint", k, None) for k in (8, 16, 50)]
    + [("heun", k, None) for k in (4, 8, 16)]
    + [(m, None, tol) for m in ("bosh3", "tsit5", "dopri5") for tol in (1e-3, 1e-4, 1e-5)]
)
# flowjax's few-step solvers (no counterpart in the peers): reported as separate rows
W2_FLOWJAX_ONLY = [(m, k, None) for m in ("dpmpp_2m", "unipc") for k in (5, 10)]
W2_PEER = (
    [("euler", k, None) for k in (25, 50, 100)]
    + [("midpoint", k, None) for k in (8, 16, 50)]
    + [("heun2", k, None) for k in (4, 8, 16)]
    + [("heun3", k, None) for k in (4, 8)]
    + [("rk4", k, None) for k in (4, 8, 16)]
    + [(m, None, tol) for m in ("bosh3", "dopri5") for tol in (1e-3, 1e-4, 1e-5)]
)


def _setting(method: str, steps: int | None, tol: float | None) -> str:
    return f"{method}_{steps}" if steps else f"{method}_{tol:.0e}"


def _fj_sample_opts(method: str, steps: int | None, tol: float | None) -> dict:
    if steps:
        return {"solver": method, "num_steps": steps}
    return {"solver": method, "num_steps": 20, "adaptive": fj.solvers.Adaptive(rtol=tol, atol=tol)}


def part_w2(quick: bool, peers: dict) -> dict:
    """W2: every setting of each side's menu on the same weights and starting points (quality:
    energy distance, sliced W2 and flow-map error; time: the sweep's rounds), then the headline
    pairs alternated over ``ROUNDS`` rounds: Euler 100 on every side, and each side's fastest
    setting at the peers' best sample quality."""
    train_steps, n, sweep_rounds = (100, 500, 1) if quick else (2000, 2000, 2)
    model, params, desc = trained_checkerboard(train_steps)
    path = fj.CondOT()
    fn = models.model_fn(model, params)
    ref = _data("checkerboard", jax.random.PRNGKey(999), n)
    x0 = np.array(jax.random.normal(jax.random.PRNGKey(5), (n, 2)), np.float32)

    def exact_flow():
        with jax.enable_x64(True):
            p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
            out = fj.sample(
                models.model_fn(model, p64), path, None, None, x_start=jnp.asarray(x0, jnp.float64),
                solver="dopri5", num_steps=50, adaptive=fj.solvers.Adaptive(rtol=1e-10, atol=1e-10),
            )  # fmt: skip
            return np.asarray(out.samples, np.float64)

    x_star = _cached(f"w2_flow_{train_steps}_{n}", exact_flow)

    runs: dict[str, Callable[[], Any]] = {}
    info: dict[str, dict] = {}
    for spec, only in [(s, False) for s in W2_FLOWJAX] + [(s, True) for s in W2_FLOWJAX_ONLY]:
        opts = _fj_sample_opts(*spec)

        def run(opts=opts):
            out = jax.block_until_ready(fj.sample(fn, path, None, None, x_start=x0, **opts))
            return np.asarray(out.samples), int(out.nfe)

        key = f"flowjax/{_setting(*spec)}"
        runs[key] = run
        info[key] = {"side": "flowjax", "setting": _setting(*spec), "flowjax_only": only}
    torch = peers.get("torch")
    tnet = xt0 = None
    if torch is not None:
        tnet = peers_torch.torch_from_flax(torch, params)
        xt0 = torch.from_numpy(x0)
        for lib in ("torchdiffeq", "flow_matching"):
            if lib not in peers:
                continue
            for spec in W2_PEER:
                key = f"{lib}/{_setting(*spec)}"
                runs[key] = peers_torch.torch_sampler(torch, tnet, xt0, lib, *spec)
                info[key] = {"side": lib, "setting": _setting(*spec), "flowjax_only": False}
    for key, run in runs.items():  # warm-up, and the samples
        samples, nfe = run()
        info[key] |= {
            "nfe": nfe,
            "energy": float(fj.distances.energy_distance(samples, ref)),
            "sliced_w2": float(
                fj.distances.sliced_wasserstein(samples, ref, jax.random.PRNGKey(0))
            ),
            "flow_error": float(np.sqrt(np.mean(np.sum((samples - x_star) ** 2, axis=1)))),
        }
    sweep = alternate(runs, sweep_rounds, warmup=0)
    for key in runs:
        info[key]["sweep_times"] = sweep[key]
    floor, floor_spread = fj.distances.finite_sample_floor(
        fj.distances.energy_distance,
        lambda k, m: fj.data.toy_sample("checkerboard", k, m),
        jax.random.PRNGKey(3),
        n,
        repeats=5,
    )
    out: dict[str, Any] = {
        "n": n,
        "model": desc,
        "energy_floor": [float(floor), float(floor_spread)],
        "sweep_rounds": sweep_rounds,
        "settings": info,
    }
    # headline 1: Euler 100 on every side (equal settings, equal NFE)
    e100 = {k.split("/")[0]: runs[k] for k in runs if k.endswith("/euler_100")}
    out["euler_100"] = {
        "times": alternate(e100, ROUNDS, warmup=0),
        "gflop": 100 * _mlp_flops(n) / 1e9,
    }
    # headline 2: each side's fastest setting (by the sweep) at the peers' best quality
    peer_keys = [k for k in info if info[k]["side"] != "flowjax"]
    if peer_keys:
        best = min(peer_keys, key=lambda k: info[k]["energy"])
        target = info[best]["energy"] + 2 * float(floor_spread)

        def fastest(keys):
            ok = [k for k in keys if info[k]["energy"] <= target]
            return min(ok, key=lambda k: float(np.median(info[k]["sweep_times"]))) if ok else None

        chosen = {
            "peer": fastest(peer_keys),
            "flowjax": fastest([k for k in info if info[k]["side"] == "flowjax" and not info[k]["flowjax_only"]]),
            "flowjax_few_step": fastest([k for k in info if info[k]["flowjax_only"]]),
        }  # fmt: skip
        chosen = {k: v for k, v in chosen.items() if v is not None}
        out["best_quality"] = {
            "peers_best": best,
            "target_energy": target,
            "chosen": chosen,
            "times": alternate({k: runs[v] for k, v in chosen.items()}, ROUNDS, warmup=0),
        }
    out["latency"] = _latency(peers, fn, tnet, 5 if quick else 20)
    return out


def _latency(peers: dict, fn, tnet, reps: int) -> dict:
    """Euler 20 at batch 1 and 64, ``reps`` calls per round: ``fj.sample`` from Python each time,
    the sampler jitted once by the user, and the peers' samplers."""
    path = fj.CondOT()
    torch = peers.get("torch")
    out = {}
    for b in (1, 64):
        x0 = np.array(jax.random.normal(jax.random.PRNGKey(b), (b, 2)), np.float32)

        def ours(x0=x0):
            return jax.block_until_ready(
                fj.sample(fn, path, None, None, x_start=x0, solver="euler", num_steps=20).samples
            )

        # the idiomatic JAX pattern for serving: the whole sampler jitted once, no per-call checks
        jitted = jax.jit(
            lambda f, x: fj.sample(f, path, None, None, x_start=x, solver="euler", num_steps=20)
        )

        def ours_jit(x0=x0, jitted=jitted):
            return jax.block_until_ready(jitted(fn, x0).samples)

        fns = {"flowjax": ours, "flowjax_jit": ours_jit}
        if torch is not None:
            for lib in ("flow_matching", "torchdiffeq"):
                if lib in peers:
                    fns[lib] = peers_torch.torch_latency(torch, tnet, torch.from_numpy(x0), lib)
        times = alternate(
            {k: (lambda f=f: [f() for _ in range(reps)]) for k, f in fns.items()}, ROUNDS
        )
        out[f"batch_{b}"] = {"calls_per_round": reps, "steps": 20, "times": times}
    return out


# ----------------------------------------------------------------------------- W3 likelihood


def part_w3(quick: bool, peers: dict) -> dict:
    train_steps, n, n_digits, sweep_rounds = (100, 100, 8, 1) if quick else (2000, 500, 32, 2)
    model, params, desc = trained_checkerboard(train_steps)
    x = _data("checkerboard", jax.random.PRNGKey(4242), n)
    ref = _cached(f"w3_ref_{train_steps}_{n}", lambda: reference_log_prob(model, params, x))
    out = w3_likelihood(peers, model, params, x, ref, ROUNDS, sweep_rounds)
    out["model"] = desc
    # digits: d = 64 (64 JVPs or 64 backward passes per evaluation), same MLP in both frameworks
    digits = fj.data.get_dataset("digits", "test").as_arrays()["x"][:n_digits]
    digits = np.asarray(digits, np.float32).reshape(len(digits), -1)
    dmodel = _flowjax_model()
    dparams = models.init(dmodel, jax.random.PRNGKey(3), jnp.zeros((1, 64)))
    out["digits"] = w3_equal_settings(peers, dmodel, dparams, digits, ROUNDS, cases=W3_DIGITS)
    out["digits"]["weights"] = "untrained (random init): a timing and agreement check"
    return out


# ----------------------------------------------------------------------------- W4 ground truth

W4_RECIPES = ("plain", "cosine_ema")


def part_w4(
    quick: bool,
    peers: dict,
    progress: Callable[[dict], None] | None = None,
    resume: dict | None = None,
) -> dict:
    """Each side trains the model on the 8-Gaussians ring (radius 4, std 0.5) with each recipe
    and seed, from the same initial weights (flowjax's init for the seed, copied into torch) on the
    same batches; the NLL gap = mean NLL of the test points minus the oracle's, every model
    evaluated by one exact likelihood (flowjax, Dopri5 1e-5, float64). ``progress(result)`` is
    called after every trained model (the suite saves partial results); ``resume``: such a
    partial result, whose models (same sizes and seeds) are kept and not trained again."""
    steps, batch, n_test, seeds = (50, 256, 100, (0, 1)) if quick else (1000, 256, 1000, (0, 1, 2))
    tol = 1e-5
    mix = fj.oracle.eight_gaussians(radius=4.0, std=0.5)
    test = np.asarray(mix.sample(jax.random.PRNGKey(31337), n_test), np.float64)
    entropy = float(-np.mean(np.asarray(mix.data_log_prob(test))))
    model = _flowjax_model()
    sides = ["flowjax"] + [
        p for p in ("flow_matching", "torchcfm") if p in peers and "torch" in peers
    ]
    out: dict[str, Any] = {
        "steps": steps,
        "batch": batch,
        "n_test": n_test,
        "seeds": list(seeds),
        "recipes": list(W4_RECIPES),
        "true_mean_nll": entropy,
        "eval_tolerance": tol,
        # a quality measurement: torch trains on one thread, which a loaded machine slows least
        # (train_seconds are not a timing comparison)
        "torch_threads": 1,
        "runs": [],
    }
    same = ("steps", "batch", "n_test", "seeds", "recipes", "true_mean_nll", "eval_tolerance")
    if resume and all(resume.get(k) == out[k] for k in same):
        out["runs"] = list(resume["runs"])
    done = {(r["seed"], r["recipe"], r["side"]) for r in out["runs"]}
    torch = peers.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    ll = jax.jit(
        lambda p: (
            L.log_likelihood(
                models.model_fn(model, p), fj.CondOT(), jnp.asarray(test), rtol=tol, atol=tol
            ).log_prob
        )
    )
    for seed in seeds:
        for recipe in W4_RECIPES:
            for side in sides:
                if (seed, recipe, side) in done:
                    continue
                t0 = time.perf_counter()
                if side == "flowjax":
                    params = _flowjax_train(
                        "eight_gaussians", steps, batch, recipe=recipe, seed=seed
                    )
                else:
                    params = _torch_train(
                        peers, side, "eight_gaussians", steps, batch, recipe=recipe, seed=seed
                    )
                seconds = time.perf_counter() - t0
                with jax.enable_x64(True):
                    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
                    gap = float(-np.mean(np.asarray(ll(p64)))) - entropy
                out["runs"].append(
                    {
                        "seed": seed,
                        "recipe": recipe,
                        "side": side,
                        "gap": gap,
                        "train_seconds": seconds,
                    }
                )
                print(f"[w4] seed {seed} {recipe} {side}: gap {gap:.4f} ({seconds:.0f} s)",
                      file=sys.stderr, flush=True)  # fmt: skip
                if progress is not None:
                    progress(out)
    if torch is not None:
        torch.set_num_threads(THREADS)
    return out


# ----------------------------------------------------------------------------- run

PARTS: dict[str, Callable[..., dict]] = {
    "limit": part_limit,
    "w1": part_w1,
    "w2": part_w2,
    "w3": part_w3,
    "w4": part_w4,
}
WORKLOADS = tuple(PARTS)


def run(quick: bool = False, workloads: tuple[str, ...] = WORKLOADS) -> dict:
    """The peer comparisons (``WORKLOADS``); ``{workload: result}``, JSON-serialisable (raw
    per-round times: the suite's report computes every ratio from them)."""
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise ValueError(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    peers = peers_torch.peers()
    return {w: PARTS[w](quick, peers) for w in workloads}


def describe_peers(peers: dict) -> dict:
    return {
        "threads": THREADS,
        "versions": {
            k: getattr(v, "__version__", "?")
            for k, v in peers.items()
            if k not in ("missing", "missing_parts")
        },
        "missing": peers.get("missing") or peers.get("missing_parts"),
    }


if __name__ == "__main__":
    from experiments.runtime import reexec_with_cpu_tuning

    reexec_with_cpu_tuning()  # huge pages for XLA:CPU's per-call buffers (experiments/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--workloads", nargs="*", choices=WORKLOADS, default=list(WORKLOADS))
    args = parser.parse_args()
    res = run(quick=args.quick, workloads=tuple(args.workloads))
    print(json.dumps(res, indent=1, default=float)[:20000])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
