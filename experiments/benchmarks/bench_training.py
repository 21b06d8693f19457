"""Benchmark: the train step's overhead over a bare jitted forward+backward, and its steps/s.

Workload: a 4x512 SiLU MLP (input 3 = a 2-D point and the time, output 2 = a velocity), written
with ``flax.linen`` here, trained by conditional flow matching (CondOT) on 8-Gaussians data with
Adam (lr 1e-3), at batch 4096 and 256.

Measured, alternating the variants round by round (this machine is shared: medians of rounds,
wall-clock and process CPU time both):

* ``bare``: ``jax.jit(jax.value_and_grad(loss))(params, batch, key)``, the floor;
* ``bare_adam``: the step a user writes by hand: forward+backward and ``optax.adam``'s update in one
  ``jax.jit`` with the parameters and moments donated (no EMA); ``step / bare_adam`` is what the
  framework adds beyond the optimizer's own passes over the parameters;
* ``step``: ``flowjax.training.make_train_step`` with Adam and EMA (decay 0.999), state donated,
  batch already on the devices: the headline ratio ``step / bare`` (target <= 1.10);
* ``step_no_ema``, ``step_no_donate``: what EMA and donation cost or save;
* ``loop``: ``train_loop`` over a numpy iterator (batch placement, metrics kept on the devices,
  fetched every 100 steps): the end-to-end rate; ``loop_log_every_step``: the same loop fetching
  the metrics after every step (a host sync per step), for comparison.

Run: ``python -m experiments.benchmarks.bench_training [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flowjax as fj
from flowjax import training as T


class MLP(nn.Module):
    """4 hidden layers of 512 SiLU units; input (x, t) in R^3, output a velocity in R^2."""

    width: int = 512
    depth: int = 4

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(2)(h)


def _workload(batch_size: int) -> tuple[Callable, Any, dict]:
    model = MLP()
    path = fj.CondOT()

    def loss_fn(params, batch, key):
        x1 = batch["x"]
        k_eps, k_t = jax.random.split(key)
        eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
        t = jax.random.uniform(k_t, (x1.shape[0],), x1.dtype)
        xt = path.interpolate(x1, eps, t)
        target = path.conditional_target("velocity", x1, eps, t)
        pred = model.apply({"params": params}, jnp.concatenate([xt, t[:, None]], axis=-1))
        return jnp.mean((pred - target) ** 2), {}

    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 3)))["params"]
    mixture = fj.oracle.eight_gaussians()
    x = np.asarray(jax.jit(lambda k: mixture.sample(k, batch_size))(jax.random.PRNGKey(1)))
    return loss_fn, params, {"x": x}


def _measure_case(batch_size: int, iters: int, rounds: int) -> dict:
    loss_fn, params, np_batch = _workload(batch_size)
    mesh = T.make_mesh()
    key = jax.random.PRNGKey(2)
    opt = T.make_optimizer("adam", 1e-3)
    configs = {
        "step": {"ema_decay": 0.999, "donate": True},
        "step_no_ema": {"ema_decay": None, "donate": True},
        "step_no_donate": {"ema_decay": 0.999, "donate": False},
    }
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
    for run in runs.values():  # compile and warm up
        run()

    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, run in runs.items():
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
        "cpu_ms": {k: 1e3 * v for k, v in cmed.items()},
        "ratio": {k: med[k] / med["bare"] for k in med if k != "bare"},
        "ratio_to_bare_adam": {k: med[k] / med["bare_adam"] for k in med},
        "cpu_ratio": {k: cmed[k] / cmed["bare"] for k in cmed if k != "bare"},
        "steps_per_sec": 1.0 / med["step"],
        "examples_per_sec": batch_size / med["step"],
        "loop_steps_per_sec": 1.0 / med["loop"],
    }
    return out


def run(quick: bool = False) -> dict:
    """Measure the cases; returns a JSON-serialisable dict (see the module docstring)."""
    plan = [(4096, 2, 3), (256, 10, 5)] if quick else [(4096, 5, 9), (256, 40, 15)]
    cases = [_measure_case(b, iters, rounds) for b, iters, rounds in plan]
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
            f"{case['examples_per_sec']:.0f}  loop steps/s {case['loop_steps_per_sec']:.1f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from experiments.runtime import reexec_with_cpu_tuning

    reexec_with_cpu_tuning()  # huge pages for XLA:CPU's per-call buffers (experiments/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = run(quick=args.quick)
    print(_table(result))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
