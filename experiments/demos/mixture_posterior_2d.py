"""Posterior sampling on the 2-D mixture observed through one coordinate: DPS and PiGDM vs exact.

Usage (from the repository root): ``python -m experiments.demos.mixture_posterior_2d [--out-dir DIR] [--quick]``

Prior: the 8-Gaussians ring (radius 4, std 0.5). Measurement: ``y = x[0] + n``, ``n ~ N(0, 0.5^2)``,
for several ``y``. The exact posterior is a Gaussian mixture (``flowjax.inverse.exact_posterior``);
its samples are the reference. For each ``y`` and each sampler (probability-flow ODE, Heun 100 steps;
reverse SDE, Euler-Maruyama 500 steps) we record the energy distance to exact posterior samples of

* the exact posterior score (``posterior_model_fn``: it must sit at the finite-sample floor),
* DPS (scale 1), DPS with Chung et al.'s normalised step (scale 1) and PiGDM (``data_var`` = the
  component variance), each with the measurement term from ``t = 0`` and from ``t = 0.1``
  (``guidance_start``), with the exact prior (the oracle) and with a *learned* prior (an MLP
  velocity trained on the ring),

next to the prior's own distance (what ignoring the measurement costs) and the floor.
Writes ``mixture_posterior_2d.json`` and ``mixture_posterior_2d.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import flowjax as fj
from experiments.demos import _common as C
from flowjax import inverse as I
from flowjax import losses as L
from flowjax import models as M
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.oracle import eight_gaussians
from flowjax.sampling import sample

PATH = fj.CondOT()
NOISE = 0.5
YS = (0.0, 2.0, 3.5)
SAMPLERS = {
    "ode": dict(solver="heun", num_steps=100),
    "sde": dict(method="sde", num_steps=500),  # sde: SDE(sigma="reverse")
}
GUIDANCE_STARTS = (0.0, 0.1)
SHOWN = ("exact", "dps_oracle_start0.0", "pigdm_oracle_start0.0", "dps_learned_start0.0",
         "pigdm_learned_start0.1")  # fmt: skip
_ed = jax.jit(energy_distance)


def main():
    args = C.parse_args(__doc__, "mixture_posterior_2d")
    q = args.quick
    n = 500 if q else 2000
    mix = eight_gaussians()
    op = I.MatrixOperator(jnp.array([[1.0, 0.0]]))
    t0 = time.time()

    steps = args.train_steps or (600 if q else 5000)
    net = M.MLP(hidden=(256, 256, 256))
    p0 = M.init(net, jax.random.PRNGKey(1), jnp.zeros((1, 2)))
    data = C.as_f32(mix.sample(jax.random.PRNGKey(2), 200_000))
    params = C.train(L.make_loss(M.make_apply_fn(net), PATH), p0, {"x": data}, steps=steps,
                     batch_size=256, lr=2e-3, seed=3, label="ring prior MLP")  # fmt: skip
    learned = M.model_fn(net, params)
    oracle = mix.model_fn(PATH)
    var = float(mix.covs[0, 0])

    def methods(prior, tag, y):
        yv = jnp.array([y])
        out = {}
        for gs in GUIDANCE_STARTS:
            kw = dict(path=PATH, noise_std=NOISE, guidance_start=gs)
            out[f"dps_{tag}_start{gs}"] = I.dps(prior, op, yv, **kw)
            out[f"dpsnorm_{tag}_start{gs}"] = I.dps(prior, op, yv, normalize=True, **kw)
            out[f"pigdm_{tag}_start{gs}"] = I.pigdm(prior, op, yv, data_var=var, **kw)
        return out

    results, scatter = [], {}
    for iy, y in enumerate(YS):
        post = I.exact_posterior(mix, op, jnp.array([y]), NOISE)
        m, s = finite_sample_floor(_ed, post.sample, jax.random.PRNGKey(10 + iy), n, 10)
        ref = post.sample(jax.random.PRNGKey(20 + iy), n)
        row = {
            "y": y,
            "posterior_weights": C.as_f32(post.weights),
            "floor_mean": float(m),
            "floor_std": float(s),
            "prior": float(_ed(mix.sample(jax.random.PRNGKey(30 + iy), n), ref)),
        }
        models = {"exact": I.posterior_model_fn(mix, op, jnp.array([y]), NOISE, path=PATH)}
        models |= methods(oracle, "oracle", y) | methods(learned, "learned", y)
        for name, model in models.items():
            for sname, kw in SAMPLERS.items():
                x = sample(model, PATH, jax.random.PRNGKey(40 + iy), (n, 2), **kw).samples
                row[f"{name}_{sname}"] = float(_ed(x, ref))
                if y == 2.0 and name in SHOWN:
                    scatter[f"{name}_{sname}"] = C.as_f32(x[:1000])
        if y == 2.0:
            scatter["reference"] = C.as_f32(ref[:1000])
        results.append(row)
        print(f"y={y}: floor {m:.4f}+-{s:.4f}, prior {row['prior']:.3f}; "
              + ", ".join(f"{k}={v:.4f}" for k, v in row.items()
                          if k.endswith(("_ode", "_sde"))))  # fmt: skip

    fig, axes = plt.subplots(2, 5, figsize=(20, 8))
    names = SHOWN
    r2 = next(r for r in results if r["y"] == 2.0)
    for i, sname in enumerate(SAMPLERS):
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.scatter(*scatter["reference"].T, s=2, c="lightgray", label="exact posterior")
            ax.scatter(*scatter[f"{name}_{sname}"].T, s=2, c="C0", alpha=0.6, label=name)
            ax.axvline(2.0, color="k", lw=0.5)
            ax.set(xlim=(-5, 5), ylim=(-5, 5), aspect="equal",
                   title=f"{name} ({sname})\nenergy distance {r2[f'{name}_{sname}']:.3f}")  # fmt: skip
            ax.title.set_fontsize(9)
    fig.suptitle(f"8-Gaussians prior observed through x[0] = 2 (noise {NOISE}); floor "
                 f"{r2['floor_mean']:.4f} +- {r2['floor_std']:.4f}, prior {r2['prior']:.3f}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out_dir / "mixture_posterior_2d.png", dpi=110)
    C.save_json(args.out_dir / "mixture_posterior_2d.json",
                {"noise_std": NOISE, "samplers": SAMPLERS, "n": n, "results": results,
                 "seconds": time.time() - t0})  # fmt: skip


if __name__ == "__main__":
    main()
