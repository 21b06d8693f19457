"""Rectified flow on the 8-Gaussians ring: straightness and NFE-quality curves before and after reflow.

Usage (from the repository root): ``python -m experiments.demos.reflow_ring [--out-dir DIR] [--quick]``

1. Train a 1-rectified flow (an MLP velocity, independent noise-data pairs, CondOT).
2. Generate noise-sample couplings with its ODE (Heun, 100 steps) and retrain on them, warm-started
   from the 1-rectified flow (2-rectified flow); repeat once more (3-rectified flow).
3. For the oracle (the exact 1-rectified flow), each trained flow and each reflow: Liu et al.'s
   straightness ``S`` of the ODE trajectories and the energy distance to fresh data of Euler
   samples at NFE 1, 2, 4, 8, 16, 32, 64 (same noise for every row), next to the finite-sample
   floor of the energy distance.

Writes ``reflow_ring.json`` and ``reflow_ring.png`` (curves and trajectories).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import flowjax as fj
from experiments.demos import _common as C
from flowjax import losses as L
from flowjax import models as M
from flowjax import reflow as R
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.oracle import eight_gaussians
from flowjax.sampling import sample

PATH = fj.CondOT()
NFES = (1, 2, 4, 8, 16, 32, 64)


def main():
    args = C.parse_args(__doc__, "reflow_ring")
    q = args.quick
    n = 500 if q else 2000
    steps = args.train_steps or (800 if q else 6000)
    pairs = 5000 if q else 100_000
    mix = eight_gaussians()
    t0 = time.time()
    ed = jax.jit(energy_distance)
    m, s = finite_sample_floor(ed, mix.sample, jax.random.PRNGKey(1), n, 10)
    ref = mix.sample(jax.random.PRNGKey(2), n)

    net = M.MLP(hidden=(256, 256, 256))
    apply_fn = M.make_apply_fn(net)
    p0 = M.init(net, jax.random.PRNGKey(3), jnp.zeros((1, 2)))
    data = C.as_f32(mix.sample(jax.random.PRNGKey(4), 400_000))
    p1 = C.train(L.make_loss(apply_fn, PATH), p0, {"x": data}, steps=steps, batch_size=256,
                 lr=2e-3, seed=5, label="1-rectified flow")  # fmt: skip
    models = {"oracle": mix.model_fn(PATH), "1-RF": M.model_fn(net, p1)}
    params = p1
    for k in (2, 3):
        teacher = models[f"{k - 1}-RF"]
        t1 = time.time()
        x0, x1 = R.generate_couplings(teacher, PATH, jax.random.PRNGKey(10 + k), (pairs, 2),
                                      num_steps=100, batch_size=20_000)  # fmt: skip
        print(f"[{k}-RF] {pairs} couplings in {time.time() - t1:.0f}s")
        params, _ = R.train_on_couplings(apply_fn, params, x0, x1, PATH, num_steps=steps,
                                         batch_size=256, lr=1e-3, seed=20 + k, ema_decay=0.999)  # fmt: skip
        models[f"{k}-RF"] = M.model_fn(net, params)

    out = {"floor": {"mean": float(m), "std": float(s), "n": n}, "nfes": list(NFES), "models": {}}
    trajs = {}
    x_traj = jax.random.normal(jax.random.PRNGKey(40), (200, 2))
    ts = jnp.linspace(0.0, 1.0, 65)
    for name, model in models.items():
        st = float(R.trajectory_straightness(model, PATH, jax.random.PRNGKey(30), (n, 2)))
        curve = R.nfe_quality(model, PATH, jax.random.PRNGKey(31), ref, num_steps=NFES)
        heun = R.nfe_quality(model, PATH, jax.random.PRNGKey(31), ref, num_steps=(1, 2, 4, 8, 16),
                             solver="heun")  # fmt: skip
        out["models"][name] = {"straightness": st, "euler": curve, "heun": heun}
        res = sample(model, PATH, None, None, x_start=x_traj, time_grid=ts, save_times=ts)
        trajs[name] = C.as_f32(res.trajectory)
        print(f"[{name}] straightness {st:.4f}; Euler energy distance by NFE: "
              + ", ".join(f"{r['nfe']}:{r['distance']:.4f}" for r in curve))  # fmt: skip
    out["seconds"] = time.time() - t0

    fig, axes = plt.subplots(1, 2 + len(models), figsize=(5 * (2 + len(models)), 4.6))
    for name, r in out["models"].items():
        e = r["euler"]
        axes[0].loglog([p["nfe"] for p in e], [max(p["distance"], 1e-4) for p in e], "o-",
                       label=f"{name} (S = {r['straightness']:.3f})")  # fmt: skip
        h = r["heun"]
        axes[1].loglog([p["nfe"] for p in h], [max(p["distance"], 1e-4) for p in h], "o-",
                       label=name)  # fmt: skip
    for ax, solver in zip(axes[:2], ("Euler", "Heun"), strict=True):
        ax.axhline(float(m + 4 * s), color="k", ls=":", lw=0.8, label="floor m+4s")
        ax.set(xlabel="NFE", ylabel="energy distance to data", title=f"{solver}: quality vs NFE")
        ax.legend(fontsize=8)
    for ax, (name, tr) in zip(axes[2:], trajs.items(), strict=True):
        ax.scatter(*C.as_f32(ref[:1000]).T, s=1, c="lightgray")
        for i in range(0, 200, 4):
            ax.plot(tr[i, :, 0], tr[i, :, 1], lw=0.6, alpha=0.8)
        ax.set(title=f"{name} trajectories, S = {out['models'][name]['straightness']:.3f}",
               aspect="equal", xlim=(-6, 6), ylim=(-6, 6))  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out_dir / "reflow_ring.png", dpi=110)
    C.save_json(args.out_dir / "reflow_ring.json", out)


if __name__ == "__main__":
    main()
