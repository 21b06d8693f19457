"""Benchmark: the train step's overhead over a bare jitted forward+backward, and its steps/s.

Workload: a 4x512 SiLU MLP (input 3 = a 2-D point and the time, output 2 = a velocity), written
with ``flax.linen`` here, trained by conditional flow matching (CondOT) on 8-Gaussians data with
Adam (lr 1e-3), at batch 4096 and 256.

Measured, alternating the variants round by round, the order rotated every round (this machine is
shared: medians of rounds, wall-clock and process CPU time both; ``rounds_ms`` keeps every round, so
that a ratio's spread over rounds can be reported):

* ``bare``: ``jax.jit(jax.value_and_grad(loss))(params, batch, key)``, the floor;
* ``bare_adam``: the step a user writes by hand: forward+backward and ``optax.adam``'s update in one
  ``jax.jit`` with the parameters and moments donated (no EMA); ``step / bare_adam`` is what the
  framework adds beyond the optimizer's own passes over the parameters;
* ``step``: ``flowjax.training.make_train_step`` with Adam and EMA (decay 0.999), state donated,
  batch already on the devices: the headline ratio ``step / bare`` (target <= 1.10);
* ``step_no_ema``, ``step_no_donate``: what EMA and donation cost or save;
* ``step_shard_map``: ``step`` with ``parallelism="shard_map"`` (per-device gradients averaged
  with explicit collectives) beside the jit step: ``shard_map_vs_jit`` is the per-round ratio
  ``step_shard_map / step`` (median, quartiles, min and max over the rounds: its spread);
* ``loop``: ``train_loop`` over a numpy iterator (batch placement, metrics kept on the devices,
  fetched every 100 steps): the end-to-end rate; ``loop_log_every_step``: the same loop fetching
  the metrics after every step (a host sync per step), for comparison.

The variants run on every device of the process (one CPU device unless
``XLA_FLAGS=--xla_force_host_platform_device_count=N``; with ``N > 1`` the batch is split over
``N`` devices that share this machine's cores).

Run: ``python -m experiments.benchmarks.bench_training [--quick] [--variants step,step_shard_map]
[--rounds R]``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flowjax as fj
from experiments.benchmarks.common import MLP
from flowjax import parallel
from flowjax import training as T


def _workload(batch_size: int) -> tuple[Callable, Any, dict]:
    model = MLP(width=512, depth=4)
    path = fj.CondOT()

    def loss_fn(params, batch, key):
        x1 = batch["x"]
        k_eps, k_t = jax.random.split(key)
        eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
        t = jax.random.uniform(k_t, (x1.shape[0],), x1.dtype)
        xt = path.interpolate(x1, eps, t)
        target = path.conditional_target("velocity", x1, eps, t)
        pred = model.apply({"params": params}, xt, t)
        return jnp.mean((pred - target) ** 2), {}

    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    params = params["params"]
    mixture = fj.oracle.eight_gaussians()
    x = np.asarray(jax.jit(lambda k: mixture.sample(k, batch_size))(jax.random.PRNGKey(1)))
    return loss_fn, params, {"x": x}


VARIANTS = (
    "bare",
    "bare_adam",
    "step",
    "step_no_ema",
    "step_no_donate",
    "step_shard_map",
    "loop",
    "loop_log_every_step",
)


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of ``values`` (e.g. per-round ratios of two variants)."""
    q1, median, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "rounds": len(values),
    }


def _measure_case(
    batch_size: int, iters: int, rounds: int, variants: tuple[str, ...] = VARIANTS
) -> dict:
    loss_fn, params, np_batch = _workload(batch_size)
    mesh = parallel.make_mesh()
    key = jax.random.PRNGKey(2)
    opt = T.make_optimizer("adam", 1e-3)
    configs = {
        "step": {"ema_decay": 0.999, "donate": True},
        "step_no_ema": {"ema_decay": None, "donate": True},
        "step_no_donate": {"ema_decay": 0.999, "donate": False},
        "step_shard_map": {"ema_decay": 0.999, "donate": True, "parallelism": "shard_map"},
    }
    configs = {k: c for k, c in configs.items() if k in variants or k == "step"}
    steps = {k: T.make_train_step(loss_fn, opt, mesh=mesh, **c) for k, c in configs.items()}
    states = {
        k: s.place_state(
            T.create_train_state(params, opt, key, ema=configs[k]["ema_decay"] is not None)
        )
        for k, s in steps.items()
    }
    batch = steps["step"].shard_batch(np_batch)
    bare = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    adam = optax.adam(1e-3)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def bare_adam_step(p, opt_state, batch, key):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, key)
        updates, opt_state = adam.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    adam_holder = {"p": jax.tree.map(jnp.copy, params)}
    adam_holder["o"] = adam.init(adam_holder["p"])

    def run_bare_adam() -> None:
        p, o = adam_holder["p"], adam_holder["o"]
        for _ in range(iters):
            p, o, _ = bare_adam_step(p, o, batch, key)
        jax.block_until_ready(p)
        adam_holder["p"], adam_holder["o"] = p, o

    def run_bare() -> None:
        out = None
        for _ in range(iters):
            out = bare(params, batch, key)
        jax.block_until_ready(out)

    def make_run(name: str) -> Callable[[], None]:
        fn = steps[name].jitted

        def run() -> None:
            s = states[name]
            for _ in range(iters):
                s, _ = fn(s, batch)
            jax.block_until_ready(s)
            states[name] = s

        return run

    data = itertools.repeat(np_batch)

    def make_loop(log_every: int) -> Callable[[], None]:
        holder = {"state": steps["step"].place_state(T.create_train_state(params, opt, key))}

        def run_loop() -> None:
            s = holder["state"]
            res = T.train_loop(
                s,
                steps["step"],
                data,
                num_steps=int(s.step) + iters,
                log_every=log_every,
                progress=False,
                handle_signals=(),
            )
            jax.block_until_ready(res.state)
            holder["state"] = res.state

        return run_loop

    runs = {
        "bare": run_bare,
        "bare_adam": run_bare_adam,
        **{k: make_run(k) for k in steps},
        "loop": make_loop(100),
        "loop_log_every_step": make_loop(1),
    }
    runs = {k: r for k, r in runs.items() if k in variants or k in ("bare", "step")}
    for run in runs.values():  # compile and warm up
        run()

    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):  # the order rotated every round (as common.alternate)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run = runs[name]
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[name].append((time.perf_counter() - t0) / iters)
            cpu[name].append((time.process_time() - c0) / iters)
    med = {k: float(np.median(v)) for k, v in wall.items()}
    cmed = {k: float(np.median(v)) for k, v in cpu.items()}
    out: dict[str, Any] = {
        "batch_size": batch_size,
        "iters_per_round": iters,
        "rounds": rounds,
        "ms": {k: 1e3 * v for k, v in med.items()},
        # ms/step of every round (the report's ratios are medians of per-round ratios)
        "rounds_ms": {k: [1e3 * x for x in v] for k, v in wall.items()},
        "cpu_ms": {k: 1e3 * v for k, v in cmed.items()},
        "ratio": {k: med[k] / med["bare"] for k in med if k != "bare"},
        "cpu_ratio": {k: cmed[k] / cmed["bare"] for k in cmed if k != "bare"},
        "steps_per_sec": 1.0 / med["step"],
        "examples_per_sec": batch_size / med["step"],
    }
    if "loop" in med:
        out["loop_steps_per_sec"] = 1.0 / med["loop"]
    if "bare_adam" in med:
        out["ratio_to_bare_adam"] = {k: med[k] / med["bare_adam"] for k in med}
    if "step_shard_map" in wall:  # paired within each round: the spread of the ratio itself
        ratios = np.asarray(wall["step_shard_map"]) / np.asarray(wall["step"])
        out["shard_map_vs_jit"] = spread(ratios.tolist())
    return out


def run(
    quick: bool = False, variants: tuple[str, ...] = VARIANTS, rounds: int | None = None
) -> dict:
    """Measure the cases; returns a JSON-serialisable dict (see the module docstring).

    ``variants``: the variants to time (``bare`` and ``step`` always); ``rounds``: override the
    number of alternated rounds.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    plan = [(4096, 2, 3), (256, 10, 5)] if quick else [(4096, 5, 9), (256, 40, 15)]
    cases = [
        _measure_case(b, iters, rounds or default_rounds, tuple(variants))
        for b, iters, default_rounds in plan
    ]
    return {
        "benchmark": "training",
        "workload": "4x512 SiLU MLP (3 -> 2), CondOT flow matching, Adam lr 1e-3, EMA 0.999",
        "device": str(jax.devices()[0].device_kind),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "target_ratio": 1.10,
        "cases": cases,
    }


def _table(result: dict) -> str:
    lines = [
        f"training benchmark on {result['device']} x{result['device_count']} "
        f"(XLA_FLAGS={result['xla_flags']!r})",
        f"{'batch':>6} {'variant':>15} {'ms/step':>9} {'ratio':>7} {'cpu ms':>8} {'cpu ratio':>9}",
    ]
    for case in result["cases"]:
        for name in case["ms"]:
            ratio = case["ratio"].get(name, 1.0)
            cratio = case["cpu_ratio"].get(name, 1.0)
            lines.append(
                f"{case['batch_size']:>6} {name:>15} {case['ms'][name]:>9.3f} {ratio:>7.3f} "
                f"{case['cpu_ms'][name]:>8.3f} {cratio:>9.3f}"
            )
        lines.append(
            f"{'':>6} {'steps/s':>15} {case['steps_per_sec']:>9.1f}  examples/s "
            f"{case['examples_per_sec']:.0f}"
            + (
                f"  loop steps/s {case['loop_steps_per_sec']:.1f}"
                if "loop_steps_per_sec" in case
                else ""
            )
        )
        if "shard_map_vs_jit" in case:
            r = case["shard_map_vs_jit"]
            lines.append(
                f"{'':>6} {'shard_map/jit':>15} median {r['median']:.3f} (quartiles "
                f"{r['q1']:.3f}-{r['q3']:.3f}, range {r['min']:.3f}-{r['max']:.3f}, "
                f"{r['rounds']} rounds)"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    from experiments.runtime import reexec_with_cpu_tuning

    reexec_with_cpu_tuning()  # huge pages for XLA:CPU's per-call buffers (experiments/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated variants to time (bare and step always run)",
    )
    parser.add_argument("--rounds", type=int, help="alternated rounds per batch size")
    args = parser.parse_args()
    result = run(quick=args.quick, variants=tuple(args.variants.split(",")), rounds=args.rounds)
    print(_table(result))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
