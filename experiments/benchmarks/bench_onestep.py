"""One-step and few-step generation (issue 16): quality at 1, 2 and 4 NFE against exact ground truth,
and the latency of one-step sampling of the digits U-Net.

**Quality** (the 8-Gaussians mixture, :func:`flowjax.oracle.eight_gaussians`, on CondOT). Trained
with the library only (:mod:`flowjax.losses`, :mod:`flowjax.models`,
:func:`flowjax.training.make_train_step`, :mod:`flowjax.reflow`), each on fresh mixture draws, one
MLP size for all, for each seed:

* ``teacher``: flow matching (velocity, CondOT);
* ``meanflow``: MeanFlow (two-time MLP, ``second_time="r"``) with the plain squared error
  (``adaptive_power=0``); ``meanflow_adaptive``: with the library's default adaptive weight
  (power 1, the paper's);
* ``shortcut``: shortcut model (``second_time="d"``);
* ``ct``: improved consistency training (EDM skip parameterisation);
* ``cd_oracle``: consistency distillation from the exact oracle velocity;
* ``cd_teacher``: consistency distillation from the trained teacher;
* ``reflow``: one reflow round on the teacher's own couplings, warm-started from the teacher,
  sampled with Euler.

Every sampler starts from the same prior draws. Reported: the energy distance to a fresh draw of the
mixture beside its finite-sample floor (data against data, mean +- std over 5 pairs), and the
flow-map error, the RMS over samples of ``|x - x*|`` with ``x*`` the same start carried by the
oracle's ODE (adaptive Tsit5 at rtol = atol = 1e-8 in float64; the reference of
``bench_few_step``). The flow-map error is defined for the deterministic samplers; multistep
consistency sampling re-noises (fresh noise), so it has none. Beside them: the teacher's and the
oracle's Euler, Heun and DPM-Solver++(2M) at NFE 1, 2, 4, 8, 16 (Heun: 2 evaluations a step, so
none at NFE 1), through the library's one NFE sweep, :func:`flowjax.reflow.nfe_curve`.
Several seeds: each cell is the mean and the spread (min-max) over seeds.

**Latency** (``latency`` part): 64 digits (8x8x1) from the U-Net of ``experiments/configs/digits.py``
(built by ``experiments.model.make_model`` from that config; random initial weights: the weights do
not change the wall time), one jitted call each, on this CPU: one MeanFlow step (the two-time U-Net),
one consistency step (the one-time U-Net), the 2-step MeanFlow sampler, against the teacher's 20-step
Euler. Timing: :func:`experiments.benchmarks.common.alternate` (warm-up, then rounds with the order
rotated, results blocked on); median, spread, and the ratio per round. Also the per-call cost of the
two-time U-Net against the one-time one.

Usage::

    python -m experiments.benchmarks.bench_onestep                  # full run: 9.5 min measured
    python -m experiments.benchmarks.bench_onestep --quick          # under 2 minutes
    python -m experiments.benchmarks.bench_onestep --json experiments/benchmarks/onestep.json
    python -m experiments.benchmarks.bench_onestep --parts latency  # only the latency part

The printed tables are markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from experiments.benchmarks.bench_few_step import _Reference, _steps
from experiments.benchmarks.common import alternate, log, median, median_ratio
from flowjax import losses as L
from flowjax import models as M
from flowjax import reflow, training
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.sampling import sampling_time_range

NFES = (1, 2, 4, 8, 16)
FEW = (1, 2, 4)
SOLVERS = ("euler", "heun", "dpmpp_2m")
METHODS = ("meanflow", "meanflow_adaptive", "shortcut", "ct", "cd_oracle", "cd_teacher", "reflow")
#: the sampling method of each trained model
SAMPLE_METHOD = {
    "meanflow": "meanflow",
    "meanflow_adaptive": "meanflow",
    "shortcut": "shortcut",
    "ct": "consistency",
    "cd_oracle": "consistency",
    "cd_teacher": "consistency",
    "reflow": "ode",
}
HIDDEN = (128, 128, 128)
BATCH = 256
LR = 1e-3
#: reflow's EMA decay, without warm-up as in the recorded run (onestep.json): 0.999 over 2,000
#: steps would keep 0.999^2000 = 14% of the warm start (the teacher) in the average (measured
#: 1-NFE energy 12.6e-3 against 1.05e-3 at 0.995, whose 0.995^2000 < 1e-4); train_on_couplings
#: now ramps the decay up by default (ema_warmup=True), which also avoids it
REFLOW_EMA = 0.995

_log = log


# ---------------------------------------------------------------------------- training


def _train(
    loss_fn: Callable,
    params: Any,
    mix: fj.GaussianMixture,
    steps: int,
    seed: int,
    *,
    with_step: bool = False,
) -> Any:
    """``steps`` Adam steps (cosine decay, EMA 0.999 with warm-up) of ``loss_fn`` on fresh draws.

    ``with_step``: the batch carries the training step (improved CT's doubling schedule), as a
    per-example column (the train step shards every batch entry along the batch) read back as a
    scalar by the loss.
    """
    if with_step:
        inner = loss_fn

        def loss_fn(params, batch, key):
            return inner(params, {"x": batch["x"], "step": batch["step"][0]}, key)

    opt = training.make_optimizer(
        "adam", LR, schedule="cosine", total_steps=steps, end_lr=0.05 * LR
    )
    step_fn = training.make_train_step(
        loss_fn, opt, mesh=training.make_mesh(), ema_decay=0.999, ema_warmup=True
    )
    state = step_fn.place_state(
        training.create_train_state(params, opt, jax.random.PRNGKey(1000 + seed))
    )
    data = np.asarray(mix.sample(jax.random.PRNGKey(2000 + seed), steps * BATCH), np.float32)
    data = data.reshape(steps, BATCH, -1)
    for k in range(steps):
        batch = {"x": data[k]}
        if with_step:
            batch["step"] = np.full((BATCH,), k, np.int32)
        state, metrics = step_fn(state, batch)
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"training diverged (final loss {loss})")
    return state.ema_params


def _mlp(second_time: str | None = None) -> M.MLP:
    return M.MLP(hidden=HIDDEN, second_time=second_time)


def _init(model: M.MLP, seed: int) -> Any:
    return M.init(model, jax.random.PRNGKey(seed), jnp.zeros((8, 2)))


def train_all(
    mix: fj.GaussianMixture,
    path: fj.AbstractPath,
    seed: int,
    steps: int,
    reflow_steps: int,
    methods: tuple[str, ...],
) -> dict[str, tuple[Callable, float]]:
    """``{name: (model_fn, seconds)}`` of the teacher and each method for one seed."""
    out: dict[str, tuple[Callable, float]] = {}
    one = _mlp()

    def timed(name: str, fn: Callable[[], Callable]) -> None:
        t0 = time.perf_counter()
        model_fn = fn()
        out[name] = (model_fn, time.perf_counter() - t0)
        _log(f"seed {seed}: {name} trained in {out[name][1]:.1f} s")

    def teacher() -> Callable:
        loss = L.make_loss(M.make_apply_fn(one), path, prediction="velocity")
        return M.model_fn(one, _train(loss, _init(one, seed), mix, steps, seed))

    timed("teacher", teacher)
    teacher_fn = out["teacher"][0]

    def two_time(kind: str) -> Callable:
        model = _mlp("d" if kind == "shortcut" else "r")
        apply = M.make_apply_fn(model)
        if kind == "meanflow":
            # the plain squared error: the adaptive weight (power 1) measured worse with more
            # steps on a two-mode mixture (tests/test_onestep_training.py)
            loss = L.make_meanflow_loss(apply, path, adaptive_power=0.0)
        elif kind == "meanflow_adaptive":
            loss = L.make_meanflow_loss(apply, path)
        else:
            loss = L.make_shortcut_loss(apply, path)
        return M.model_fn(model, _train(loss, _init(model, seed), mix, steps, seed))

    def consistency(kind: str) -> Callable:
        apply = L.consistency_apply_fn(M.make_apply_fn(one), path)
        if kind == "ct":
            loss = L.make_consistency_training_loss(apply, path, total_steps=steps)
        else:
            teacher = mix.model_fn(path) if kind == "cd_oracle" else teacher_fn
            loss = L.make_consistency_distillation_loss(apply, path, teacher)
        params = _train(loss, _init(one, seed), mix, steps, seed, with_step=kind == "ct")
        return L.ConsistencyModelFn(M.model_fn(one, params), path)

    def reflowed() -> Callable:
        n_pairs = reflow_steps * BATCH // 4  # each pair seen about four times
        x0, x1 = reflow.generate_couplings(
            teacher_fn, path, jax.random.PRNGKey(3000 + seed), (n_pairs, 2), solver="heun",
            num_steps=50,
        )  # fmt: skip
        params, _ = reflow.train_on_couplings(
            M.make_apply_fn(one), teacher_fn.params, x0, x1, path, num_steps=reflow_steps,
            batch_size=BATCH, seed=seed, lr=LR, ema_decay=REFLOW_EMA, ema_warmup=False,
        )  # fmt: skip
        return M.model_fn(one, params)

    builders: dict[str, Callable[[], Callable]] = {
        "meanflow": lambda: two_time("meanflow"),
        "meanflow_adaptive": lambda: two_time("meanflow_adaptive"),
        "shortcut": lambda: two_time("shortcut"),
        "ct": lambda: consistency("ct"),
        "cd_oracle": lambda: consistency("cd_oracle"),
        "cd_teacher": lambda: consistency("cd_teacher"),
        "reflow": reflowed,
    }
    for name in methods:
        timed(name, builders[name])
    return out


# ---------------------------------------------------------------------------- evaluation


def _flow_error(x: jax.Array, x_ref: jax.Array) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.sum((x - x_ref) ** 2, axis=-1))))


def solver_curve(
    model_fn: Callable,
    path: fj.AbstractPath,
    refs: _Reference,
    score: Callable[[jax.Array], Any],
    solver: str,
    nfes: tuple[int, ...],
) -> list[dict[str, Any]]:
    """Energy distance and flow-map error of ``solver`` at each NFE it can make exactly."""
    t0, t1 = sampling_time_range(path, solver=solver)
    x0, x_ref = refs.get(t0, t1)

    def run(nfe: int) -> tuple[jax.Array, jax.Array, dict[str, Any]]:
        res = fj.sample(
            model_fn, path, None, None, x_start=x0, solver=solver, num_steps=_steps(solver, nfe),
            t_start=t0, t_end=t1,
        )  # fmt: skip
        x = jax.block_until_ready(res.samples)
        return x, res.nfe, {"flow_error": _flow_error(x, x_ref), "solver": solver}

    variants = [{"target_nfe": k} for k in nfes if _steps(solver, k) is not None]
    rows = reflow.nfe_curve(
        lambda target_nfe: run(target_nfe), variants, score, score_name="energy_distance"
    )
    return rows


def few_step_curve(
    model_fn: Callable,
    path: fj.AbstractPath,
    refs: _Reference,
    score: Callable[[jax.Array], Any],
    method: str,
    nfes: tuple[int, ...],
) -> list[dict[str, Any]]:
    """The same for a few-step method (one model call per step)."""
    if method == "ode":
        return solver_curve(model_fn, path, refs, score, "euler", nfes)
    t0, t1 = sampling_time_range(path, method=method)
    x0, x_ref = refs.get(t0, t1)

    def run(target_nfe: int) -> tuple[jax.Array, jax.Array, dict[str, Any]]:
        res = fj.sample(
            model_fn, path, jax.random.PRNGKey(9), None, x_start=x0, method=method,
            num_steps=target_nfe,
        )  # fmt: skip
        x = jax.block_until_ready(res.samples)
        stochastic = method == "consistency" and target_nfe > 1
        err = None if stochastic else _flow_error(x, x_ref)
        return x, res.nfe, {"flow_error": err, "solver": method}

    return reflow.nfe_curve(
        run, [{"target_nfe": k} for k in nfes], score, score_name="energy_distance"
    )


def quality(
    quick: bool, seeds: tuple[int, ...], steps: int, reflow_steps: int, n: int
) -> dict[str, Any]:
    mix, path = fj.oracle.eight_gaussians(), fj.CondOT()
    ed = jax.jit(energy_distance)
    floor = finite_sample_floor(ed, mix.sample, jax.random.PRNGKey(100), n, 5)
    data = mix.sample(jax.random.PRNGKey(101), n)
    eps = jax.random.normal(jax.random.PRNGKey(7), (n, 2))

    def score(x: jax.Array) -> jax.Array:
        return ed(x, data)

    with jax.enable_x64(True):  # the reference flow map in float64 (the mixture built in it)
        refs64 = _Reference(fj.oracle.eight_gaussians(), path, eps.astype(jnp.float64))
        for solver in (*SOLVERS, "meanflow"):
            t0, t1 = sampling_time_range(
                path, **({"method": solver} if solver == "meanflow" else {"solver": solver})
            )
            refs64.get(t0, t1)
    refs = _Reference(mix, path, eps)
    refs._cache = {
        k: (v[0].astype(jnp.float32), v[1].astype(jnp.float32)) for k, v in refs64._cache.items()
    }
    _log(f"references: {sorted(refs._cache)}")

    rows: list[dict[str, Any]] = []
    oracle_fn = mix.model_fn(path)
    for solver in SOLVERS:
        for r in solver_curve(oracle_fn, path, refs, score, solver, NFES):
            rows.append({"model": "oracle", "seed": None, **r})
    _log("oracle curves")
    train_seconds: dict[str, list[float]] = {}
    for seed in seeds:
        trained = train_all(mix, path, seed, steps, reflow_steps, METHODS)
        for name, (fn, secs) in trained.items():
            train_seconds.setdefault(name, []).append(secs)
            if name == "teacher":
                for solver in SOLVERS:
                    for r in solver_curve(fn, path, refs, score, solver, NFES):
                        rows.append({"model": "teacher", "seed": seed, **r})
            else:
                for r in few_step_curve(fn, path, refs, score, SAMPLE_METHOD[name], FEW):
                    rows.append({"model": name, "seed": seed, **r})
        _log(f"seed {seed} evaluated")
    return {
        "dataset": "eight_gaussians",
        "path": "condot",
        "n": n,
        "seeds": list(seeds),
        "train_steps": steps,
        "reflow_steps": reflow_steps,
        "batch_size": BATCH,
        "mlp_hidden": list(HIDDEN),
        "floor_energy": [float(floor[0]), float(floor[1])],
        "train_seconds": train_seconds,
        "rows": rows,
    }


# ---------------------------------------------------------------------------- latency


def latency(rounds: int, quick: bool) -> dict[str, Any]:
    """Wall time of 64 digits from one jitted call: 1 step, 2 steps, the teacher's 20 Euler steps."""
    from experiments.configs import digits
    from experiments.model import make_model

    cfg = digits.get_config("fm")
    one = make_model(cfg, None)
    u = cfg.model.unet
    desc = (
        f"digits.py:fm U-Net (channels {u.channels}, channel_mults {tuple(u.channel_mults)}, "
        f"{u.num_res_blocks} res block(s) a level, attention_resolutions "
        f"{u.attention_resolutions} (None: every level but the first), time input "
        f"{u.time_input}/{u.time_embedding}), random initial weights"
    )
    two = one.clone(second_time="r")
    path = fj.get_path(cfg.path.name)
    shape = (64, 8, 8, 1)
    x = jnp.zeros(shape)
    fn1 = M.model_fn(one, M.init(one, jax.random.PRNGKey(0), x))
    fn2 = M.model_fn(two, M.init(two, jax.random.PRNGKey(0), x))
    ct_fn = L.ConsistencyModelFn(fn1, path)

    def sampler(fn: Callable, **kw: Any) -> Callable[[], jax.Array]:
        run = jax.jit(lambda fn, key: fj.sample(fn, path, key, shape, **kw).samples)
        key = jax.random.PRNGKey(1)
        return lambda: run(fn, key)

    t = jnp.full((64,), 0.5)
    call1 = jax.jit(lambda fn, x, t: fn(x, t))
    call2 = jax.jit(lambda fn, x, t: fn(x, t, t2=t))
    fns = {
        "meanflow_1": sampler(fn2, method="meanflow", num_steps=1),
        "consistency_1": sampler(ct_fn, method="consistency", num_steps=1),
        "meanflow_2": sampler(fn2, method="meanflow", num_steps=2),
        "euler_20": sampler(fn1, solver="euler", num_steps=20),
        "call_one_time": lambda: call1(fn1, x, t),
        "call_two_time": lambda: call2(fn2, x, t),
    }
    # the user-facing call (host-side argument checks included), beside the bare program
    fns["meanflow_1_sample"] = lambda: (
        fj.sample(fn2, path, jax.random.PRNGKey(1), shape, method="meanflow", num_steps=1).samples
    )
    _log("latency: timing")
    load_before = os.getloadavg()
    times = alternate(fns, rounds, warmup=2)
    load_after = os.getloadavg()
    ratios = {
        f"{a}/{b}": np.asarray(times[a]) / np.asarray(times[b])
        for a, b in [
            ("euler_20", "meanflow_1"),
            ("euler_20", "consistency_1"),
            ("euler_20", "meanflow_2"),
            ("call_two_time", "call_one_time"),
            ("meanflow_1_sample", "meanflow_1"),
        ]
    }
    return {
        "model": desc,
        "params_one_time": M.count_params(fn1.params),
        "params_two_time": M.count_params(fn2.params),
        "batch": list(shape),
        "rounds": rounds,
        "machine": f"{platform.machine()}, {jax.devices()[0].device_kind}, {os.cpu_count()} cores",
        "load_average_1min": [load_before[0], load_after[0]],
        "seconds": {k: [float(s) for s in v] for k, v in times.items()},
        "median_s": {k: median(v) for k, v in times.items()},
        "ratio_median": {k: median_ratio(times, *k.split("/")) for k in ratios},
        "ratio_per_round": {k: [float(r) for r in v] for k, v in ratios.items()},
    }


# ---------------------------------------------------------------------------- report


def _spread(vals: list[float], scale: float, fmt: str) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return format(vals[0] * scale, fmt)
    m = float(np.mean(vals)) * scale
    return f"{m:{fmt}} ({min(vals) * scale:{fmt}}-{max(vals) * scale:{fmt}})"


def quality_tables(q: dict[str, Any]) -> str:
    rows = q["rows"]
    f = q["floor_energy"]
    lines = [
        f"8-Gaussians on CondOT, n = {q['n']} samples, seeds {q['seeds']}; MLP {q['mlp_hidden']}, "
        f"{q['train_steps']} Adam steps of batch {q['batch_size']} (reflow: {q['reflow_steps']} "
        "steps from the teacher), EMA 0.999 with warm-up (reflow: 0.995).",
        f"Energy-distance floor (data vs data): {f[0] * 1e3:.2f} +- {f[1] * 1e3:.2f} (x 1e3).",
        "Cells: mean over seeds (min-max); x 1e3. flow error: RMS |x - x*| against the oracle's "
        "exact flow map; '-': not defined (re-noised) or not made at that NFE.",
        "The energy distance is the unbiased estimate (it can be negative); every row is scored "
        "against the same reference draw from the same starting noise, so values below the "
        "floor's mean occur, and differences between rows smaller than the floor's std are not "
        "significant.",
        "",
    ]
    for metric, title in (("energy_distance", "energy distance"), ("flow_error", "flow-map error")):
        lines += [
            f"{title} x 1e3",
            "",
            "| model | sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |",
            "|---|---|" + "---|" * len(NFES),
        ]
        keys = dict.fromkeys((r["model"], r["solver"]) for r in rows)
        for model, solver in keys:
            cells = []
            for k in NFES:
                match = [
                    r
                    for r in rows
                    if r["model"] == model and r["solver"] == solver and r["target_nfe"] == k
                ]
                sel = [r[metric] for r in match if r[metric] is not None]
                cell = _spread(sel, 1e3, ".2f" if metric == "energy_distance" else ".0f")
                made = {r["nfe"] for r in match}
                cells.append(cell if made <= {k} else f"{cell} (NFE {sorted(made)})")
            lines.append(f"| {model} | {solver} | " + " | ".join(cells) + " |")
        lines.append("")
    secs = {k: _spread(v, 1.0, ".0f") for k, v in q["train_seconds"].items()}
    lines.append("Training seconds per seed (mean (min-max)): " + ", ".join(
        f"{k} {v}" for k, v in secs.items()
    ))  # fmt: skip
    return "\n".join(lines)


def latency_table(lat: dict[str, Any]) -> str:
    lines = [
        f"Latency: {lat['batch'][0]} digits {tuple(lat['batch'][1:])}, {lat['model']} "
        f"({lat['params_one_time']} / {lat['params_two_time']} parameters one-time / two-time); "
        f"{lat['rounds']} rounds alternated, {lat['machine']}; 1-min load average "
        f"{lat['load_average_1min'][0]:.1f} before, {lat['load_average_1min'][1]:.1f} after "
        "(a shared machine).",
        "",
        "| call | median ms | min-max ms |",
        "|---|---|---|",
    ]
    for k, v in lat["seconds"].items():
        lines.append(f"| {k} | {median(v) * 1e3:.2f} | {min(v) * 1e3:.2f}-{max(v) * 1e3:.2f} |")
    lines += ["", "| ratio (per round) | median | min-max |", "|---|---|---|"]
    for k, v in lat["ratio_per_round"].items():
        lines.append(f"| {k} | {lat['ratio_median'][k]:.2f} | {min(v):.2f}-{max(v):.2f} |")
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    parts = []
    if "quality" in result:
        parts += [quality_tables(result["quality"]), ""]
    if "latency" in result:
        parts += [latency_table(result["latency"]), ""]
    parts.append(f"({result['seconds']:.0f} s in all)")
    return "\n".join(parts)


def run(quick: bool = False, parts: tuple[str, ...] = ("quality", "latency")) -> dict[str, Any]:
    start = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "onestep",
        "quick": quick,
        "device": str(jax.devices()[0].platform),
    }
    if "quality" in parts:
        if quick:
            result["quality"] = quality(True, (0,), 300, 200, 500)
        else:
            result["quality"] = quality(False, (0, 1, 2), 4000, 2000, 2000)
    if "latency" in parts:
        result["latency"] = latency(3 if quick else 11, quick)
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short training")
    parser.add_argument(
        "--parts", default="quality,latency", help="comma-separated: quality, latency"
    )
    parser.add_argument("--json", help="also write the result dict to this file")
    args = parser.parse_args()
    result = run(args.quick, tuple(p.strip() for p in args.parts.split(",") if p.strip()))
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
