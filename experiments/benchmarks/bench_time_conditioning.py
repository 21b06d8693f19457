"""Benchmark: what the network sees as time, against solver evaluations and sample quality.

The README's training snippet (issue 20): ``models.MLP(hidden=(128, 128, 128))``, CondOT, velocity
prediction, AdamW (lr 1e-3) with warmup + cosine, EMA 0.999, batch 512 on 8-Gaussians, trained once
per time conditioning with the same seeds. For each variant:

* ``loss``: mean training loss over the last 10% of steps;
* ``euler_N``: energy distance of 2,000 Euler samples (``N`` steps, EMA parameters) to 2,000 data
  samples, against ``floor`` (mean +- std of the statistic between two independent data samples);
* ``dopri5 max`` / ``dopri5 rms``: NFE (and energy distance) of adaptive Dopri5 at
  ``rtol = atol = --tol`` (default 1e-5) with ``error_norm="max"`` (every example meets the
  tolerance) and ``"rms"`` (the batch's RMS), 2,000 samples;
* ``dopri5 1e-4 max``: NFE at the experiments' sampler tolerance.

Variants (``--variants`` picks a subset, comma-separated):
``sin1000`` (the old default: sinusoidal of ``1000 t``), ``fourier16`` (the old Fourier scale),
``none`` (plain ``[x, t]``), ``sin1`` (sinusoidal of ``t``), ``fourier1``, ``learned1``,
``none_logsnr``, ``none_edm`` (plain input of EDM's ``c_noise``), ``sin_edm`` (sinusoidal of
``c_noise``, EDM's DDPM++ choice), ``fourier_edm``.

Run: ``python -m experiments.benchmarks.bench_time_conditioning [--steps 3000] [--quick]
[--variants none,sin1000] [--json out.json]``. ``--quick``: 600 steps, four variants.
``--tol-curve``: the first variant only: Dopri5 at rtol = atol in 1e-2..1e-6 with each error norm:
NFE, energy distance and the distance to a 1e-7 reference solve (worst example and RMS).
``--unet``: the digits config's U-Net (channels 32, mults (1, 2), one block per level) on dequantized
8x8 digits, CondOT velocity, batch 128, EMA 0.99, ``--steps`` steps; pixel-space energy distance to the 297 test
digits at Euler 8/16/32, Dopri5 NFE at 1e-3 (the digits config's sampler) and 1e-4.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from flowjax import losses, models
from flowjax import training as T
from flowjax.solvers import Adaptive

VARIANTS: dict[str, dict[str, Any]] = {
    "sin1000": {"time_embedding": "sinusoidal", "sinusoidal_scale": 1000.0},
    "fourier16": {"time_embedding": "fourier", "fourier_scale": 16.0},
    "none": {"time_embedding": "none"},
    "sin1": {"time_embedding": "sinusoidal", "sinusoidal_scale": 1.0},
    "fourier1": {"time_embedding": "fourier", "fourier_scale": 1.0},
    "learned1": {"time_embedding": "learned", "fourier_scale": 1.0},
    "none_logsnr": {"time_embedding": "none", "time_input": "log_snr"},
    "none_edm": {"time_embedding": "none", "time_input": "edm"},
    "sin_edm": {"time_embedding": "sinusoidal", "time_input": "edm", "sinusoidal_scale": 1.0},
    "fourier_edm": {"time_embedding": "fourier", "time_input": "edm", "fourier_scale": 1.0},
}
QUICK = ("sin1000", "none", "sin1", "fourier1")
#: The digits U-Net's variants (``--unet``): the old default, and the candidates.
UNET_VARIANTS = ("sin1000", "sin1", "none", "sin_edm")
#: The digits config's U-Net (experiments/configs/digits.py).
DIGITS_UNET = {"channels": 32, "channel_mults": (1, 2), "num_res_blocks": 1, "num_groups": 8}


def train(variant: dict[str, Any], steps: int, path, seed: int = 0):
    """The README snippet's training with ``variant``'s time conditioning; (model, ema, loss)."""
    model = models.MLP(hidden=(128, 128, 128), path=path, **variant)
    params = models.init(model, jax.random.PRNGKey(seed), jnp.zeros((1, 2)))
    loss_fn = losses.make_loss(models.make_apply_fn(model), path, prediction="velocity")
    opt = T.make_optimizer(
        "adamw", 1e-3, schedule="cosine", warmup_steps=min(100, steps // 10), total_steps=steps
    )
    step = T.make_train_step(loss_fn, opt, mesh=T.make_mesh(), ema_decay=0.999)
    state = step.place_state(T.create_train_state(params, opt, jax.random.PRNGKey(seed + 1)))
    it = fj.data.make_iterator(
        fj.data.get_dataset("eight_gaussians"), global_batch_size=512, seed=seed
    )
    tail = []
    for i in range(steps):
        state, metrics = step(state, step.shard_batch(next(it)))
        if i >= steps - max(1, steps // 10):
            tail.append(metrics["loss"])
    return model, state.ema_params, float(np.mean(jax.device_get(tail)))


def evaluate(model, params, path, tol: float, n: int = 2000) -> dict[str, Any]:
    mix = fj.oracle.eight_gaussians()
    data = mix.sample(jax.random.PRNGKey(10), n)
    fn = models.model_fn(model, params)
    key = jax.random.PRNGKey(2)
    out: dict[str, Any] = {}

    def energy(x):
        return float(fj.distances.energy_distance(x, data))

    for steps in (8, 16, 32):
        res = fj.sample(fn, path, key, (n, 2), solver="euler", num_steps=steps)
        out[f"euler_{steps}"] = energy(res.samples)
    for name, t, norm in (
        ("dopri5_max", tol, "max"),
        ("dopri5_rms", tol, "rms"),
        ("dopri5_1e-4_max", 1e-4, "max"),
        ("dopri5_1e-4_rms", 1e-4, "rms"),
    ):
        ad = Adaptive(rtol=t, atol=t, error_norm=norm)
        res = fj.sample(fn, path, key, (n, 2), solver="dopri5", adaptive=ad)
        out[name] = {"nfe": int(res.nfe), "energy": energy(res.samples)}
    return out


def train_unet(variant: dict[str, Any], steps: int, path, seed: int = 0):
    """The digits config's U-Net (dropout 0.1), velocity on CondOT, batch 128: (model, ema, loss).

    EMA decay 0.99: a short run's 0.999-average would still weigh the initialisation heavily.
    """
    model = models.UNet(**DIGITS_UNET, dropout=0.1, path=path, **variant)
    params = models.init(model, jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 1)))
    loss_fn = losses.make_loss(models.make_apply_fn(model), path, prediction="velocity")
    opt = T.make_optimizer(
        "adamw", 2e-3, schedule="cosine", warmup_steps=min(100, steps // 10), total_steps=steps
    )
    step = T.make_train_step(loss_fn, opt, mesh=T.make_mesh(), ema_decay=0.99)
    state = step.place_state(T.create_train_state(params, opt, jax.random.PRNGKey(seed + 1)))
    it = fj.data.make_iterator(
        fj.data.get_dataset("digits", dequantize=True), global_batch_size=128, seed=seed
    )
    tail = []
    for i in range(steps):
        state, metrics = step(state, step.shard_batch(next(it)))
        if i >= steps - max(1, steps // 10):
            tail.append(metrics["loss"])
    return model, state.ema_params, float(np.mean(jax.device_get(tail)))


def evaluate_unet(model, params, path, n: int = 297) -> dict[str, Any]:
    """Pixel-space energy distance to the 297 test digits; Dopri5 NFE at 1e-3 (digits config), 1e-4."""
    test = fj.data.get_dataset("digits", split="test")
    data = jnp.asarray(next(fj.data.make_iterator(test, global_batch_size=n, seed=0))["x"])
    fn = models.model_fn(model, params)
    key = jax.random.PRNGKey(2)
    out: dict[str, Any] = {}

    def energy(x):
        return float(fj.distances.energy_distance(x.reshape(n, -1), data.reshape(n, -1)))

    for steps in (8, 16, 32):
        res = fj.sample(fn, path, key, (n, 8, 8, 1), solver="euler", num_steps=steps)
        out[f"euler_{steps}"] = energy(res.samples)
    for name, t, norm in (
        ("dopri5_1e-3_max", 1e-3, "max"),
        ("dopri5_1e-3_rms", 1e-3, "rms"),
        ("dopri5_1e-4_rms", 1e-4, "rms"),
    ):
        ad = Adaptive(rtol=t, atol=t, error_norm=norm)
        res = fj.sample(fn, path, key, (n, 8, 8, 1), solver="dopri5", adaptive=ad)
        out[name] = {"nfe": int(res.nfe), "energy": energy(res.samples)}
    return out


def unet_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| conditioning | loss | Euler 8 | Euler 16 | Euler 32 | Dopri5 1e-3 max: NFE / energy "
        "| Dopri5 1e-3 rms | Dopri5 1e-4 rms | train s |",
        "|" + "---|" * 9,
    ]
    for name, r in results.items():
        e = r["eval"]
        cells = [f"{e[k]['nfe']} / {e[k]['energy']:.3f}" for k in e if k.startswith("dopri5")]
        lines.append(
            f"| `{name}` | {r['loss']:.4f} | {e['euler_8']:.3f} | {e['euler_16']:.3f} | "
            f"{e['euler_32']:.3f} | {' | '.join(cells)} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines)


def tolerance_curve(model, params, path, n: int = 2000) -> list[dict[str, Any]]:
    """NFE, energy distance and the error against a tight reference solve, per tolerance and norm.

    The reference is Dopri5 at ``rtol = atol = 1e-7`` with the ``max`` norm from the same noise;
    ``err_max`` is the worst example's distance to it, ``err_rms`` the batch RMS distance.
    """
    mix = fj.oracle.eight_gaussians()
    data = mix.sample(jax.random.PRNGKey(10), n)
    fn = models.model_fn(model, params)
    key = jax.random.PRNGKey(2)
    tight = Adaptive(rtol=1e-7, atol=1e-7, error_norm="max", max_steps=16384)
    ref = fj.sample(fn, path, key, (n, 2), solver="dopri5", adaptive=tight)
    rows = [{"tol": 1e-7, "norm": "max", "nfe": int(ref.nfe), "err_max": 0.0, "err_rms": 0.0}]
    rows[0]["energy"] = float(fj.distances.energy_distance(ref.samples, data))
    for tol in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        for norm in ("max", "rms"):
            ad = Adaptive(rtol=tol, atol=tol, error_norm=norm)
            res = fj.sample(fn, path, key, (n, 2), solver="dopri5", adaptive=ad)
            dist = jnp.linalg.norm(res.samples - ref.samples, axis=-1)
            rows.append(
                {
                    "tol": tol,
                    "norm": norm,
                    "nfe": int(res.nfe),
                    "energy": float(fj.distances.energy_distance(res.samples, data)),
                    "err_max": float(jnp.max(dist)),
                    "err_rms": float(jnp.sqrt(jnp.mean(dist**2))),
                }
            )
    return rows


def curve_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| rtol = atol | error_norm | NFE | energy | max error | RMS error |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['tol']:g} | {r['norm']} | {r['nfe']} | {r['energy']:.4f} | {r['err_max']:.1e} | "
        f"{r['err_rms']:.1e} |"
        for r in rows
    ]
    return "\n".join(lines)


def floor(n: int = 2000) -> tuple[float, float]:
    mix = fj.oracle.eight_gaussians()
    mean, std = fj.distances.finite_sample_floor(
        fj.distances.energy_distance, mix.sample, jax.random.PRNGKey(20), n
    )
    return float(mean), float(std)


def table(results: dict[str, dict[str, Any]], fl: tuple[float, float], tol: float) -> str:
    head = (
        f"| conditioning | loss | Euler 8 | Euler 16 | Euler 32 | Dopri5 max {tol:g}: NFE / energy "
        f"| Dopri5 rms {tol:g}: NFE / energy | Dopri5 1e-4 max / rms: NFE | train s |"
    )
    lines = [head, "|" + "---|" * 9]
    for name, r in results.items():
        e = r["eval"]
        lines.append(
            f"| `{name}` | {r['loss']:.4f} | {e['euler_8']:.4f} | {e['euler_16']:.4f} | "
            f"{e['euler_32']:.4f} | {e['dopri5_max']['nfe']} / {e['dopri5_max']['energy']:.4f} | "
            f"{e['dopri5_rms']['nfe']} / {e['dopri5_rms']['energy']:.4f} | "
            f"{e['dopri5_1e-4_max']['nfe']} / {e['dopri5_1e-4_rms']['nfe']} | {r['train_s']:.0f} |"
        )
    lines.append(
        f"\nEnergy-distance floor (2,000 vs 2,000 data samples): {fl[0]:.4f} +- {fl[1]:.4f}"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--quick", action="store_true", help="600 steps, four variants")
    ap.add_argument(
        "--variants", default="", help="comma-separated subset of " + ",".join(VARIANTS)
    )
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    ap.add_argument("--unet", action="store_true", help="the digits U-Net instead of the MLP")
    ap.add_argument(
        "--tol-curve",
        action="store_true",
        help="train the first variant only; Dopri5 NFE, energy and error against tolerance",
    )
    args = ap.parse_args()
    if args.unet:
        return main_unet(args)
    names = [s for s in args.variants.split(",") if s] or list(QUICK if args.quick else VARIANTS)
    steps = 600 if args.quick and args.steps == 3000 else args.steps
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    path = fj.paths.CondOT()
    if args.tol_curve:
        model, params, _ = train(VARIANTS[names[0]], steps, path, args.seed)
        rows = tolerance_curve(model, params, path)
        print(f"{names[0]}, {steps} steps, seed {args.seed}, 2,000 samples\n")
        print(curve_table(rows))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"variant": names[0], "steps": steps, "rows": rows}, f, indent=1)
        return
    fl = floor()
    results = _train_and_evaluate(
        names,
        lambda name: train(VARIANTS[name], steps, path, args.seed),
        lambda model, params: evaluate(model, params, path, args.tol),
    )
    print(f"\n{steps} steps, seed {args.seed}\n")
    print(table(results, fl, args.tol))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"steps": steps, "seed": args.seed, "floor": fl, "results": results}, f, indent=1
            )


def _train_and_evaluate(
    names: list[str], train_fn: Callable[[str], tuple], eval_fn: Callable[..., dict]
) -> dict[str, dict[str, Any]]:
    """Train and evaluate each variant in turn; prints one JSON line per variant."""
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.perf_counter()
        model, params, loss = train_fn(name)
        t1 = time.perf_counter()
        results[name] = {"loss": loss, "train_s": t1 - t0, "eval": eval_fn(model, params)}
        results[name]["eval_s"] = time.perf_counter() - t1
        print(json.dumps({name: results[name]}), flush=True)
    return results


def main_unet(args) -> None:
    names = [s for s in args.variants.split(",") if s] or list(UNET_VARIANTS)
    steps = 300 if args.quick and args.steps == 3000 else args.steps
    path = fj.paths.CondOT()
    results = _train_and_evaluate(
        names,
        lambda name: train_unet(VARIANTS[name], steps, path, args.seed),
        lambda model, params: evaluate_unet(model, params, path),
    )
    print(f"\ndigits U-Net, {steps} steps, seed {args.seed}\n")
    print(unet_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": steps, "seed": args.seed, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
