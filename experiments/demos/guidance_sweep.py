"""Guidance sweeps over the weight w: classification accuracy and distance to the class-conditional.

Usage (from the repository root): ``python -m experiments.demos.guidance_sweep [--out-dir DIR] [--quick]``

Three settings, each swept over w (0 = unconditional, 1 = conditional, > 1 sharpened):

1. **Oracle** (exact): the overlapping 8-Gaussians mixture (radius 1.5, std 0.5), components as
   classes. Classifier-free guidance with the exact conditional model (null label 8) and classifier
   guidance with the exact unconditional score and the Bayes classifier of noisy points. Accuracy
   is the rate at which the oracle's Bayes classifier assigns a sample to its class (the exact
   conditional gives ~0.75); the energy distance is that of class-2 samples to exact class-2 data.
2. **Learned toy**: a class-conditional MLP trained with label dropout 0.2 (CFG), and a
   time-dependent Classifier trained on noisy data guiding the same network's unconditional output
   (classifier guidance, from t = 0 and from ``guidance_start`` = 0.1).
3. **Digits**: a class-conditional MLP on flattened 8x8 digits with label dropout; accuracy of CFG
   samples under a logistic-regression digit classifier, and the energy distance of all samples to
   the training digits, against w (probability-flow ODE; reverse SDE at w = 0, 1, 3).

Writes ``guidance_sweep.json`` and ``guidance_sweep.png``, ``guidance_digits.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import flowjax as fj
from experiments.demos import _common as C
from flowjax import guidance as G
from flowjax import losses as L
from flowjax import models as M
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.oracle import eight_gaussians
from flowjax.sampling import sample

PATH = fj.CondOT()
MIX = eight_gaussians(radius=1.5, std=0.5)
K = MIX.num_components
WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
ODE = dict(solver="heun", num_steps=50)
DIGIT_SAMPLERS = {
    "ode": dict(solver="heun", num_steps=50),
    "sde": dict(method="sde", num_steps=200),  # sde: SDE(sigma="reverse")
}
_ed = jax.jit(energy_distance)


def bayes_rate(x, labels):
    return float(jnp.mean(jnp.argmax(MIX.responsibilities(PATH, x, 1.0), -1) == labels))


def toy_sweep(name, cfg_model, cg_model_fn, clf, n, key, ref2, cg_starts=(0.0,)):
    """Accuracy and class-2 energy distance of CFG and CG samples for every w.

    ``cg_starts``: classifier guidance from each ``guidance_start`` (``cg`` for 0, else
    ``cg_start{s}``)."""
    labels = jnp.arange(n, dtype=jnp.int32) % K
    two = jnp.full((n,), 2, jnp.int32)
    kinds = ["cfg"] + ["cg" if s == 0 else f"cg_start{s}" for s in cg_starts]
    rows = []
    for w in WEIGHTS:
        row = {"w": w}
        for kind, start in zip(kinds, (None, *cg_starts), strict=True):
            for lab, what in ((labels, "acc"), (two, "ed")):
                if kind == "cfg":
                    model = G.classifier_free(cfg_model, lab, scale=w, num_classes=K)
                else:
                    model = G.classifier_guided(cg_model_fn, clf, lab, scale=w, path=PATH,
                                                guidance_start=start)  # fmt: skip
                x = sample(model, PATH, key, (n, 2), **ODE).samples
                if what == "acc":
                    row[f"{kind}_accuracy"] = bayes_rate(x, lab)
                else:
                    row[f"{kind}_energy_distance"] = float(_ed(x, ref2))
                    if w in (0.0, 1.0, 3.0):
                        row[f"{kind}_samples"] = C.as_f32(x[:400])
        print(f"[{name}] w={w}: " + ", ".join(
            f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "w"))  # fmt: skip
        rows.append(row)
    return rows


def main():
    args = C.parse_args(__doc__, "guidance_sweep")
    q = args.quick
    key = jax.random.PRNGKey(args.seed)
    n = 500 if q else 2000
    out = {"weights": list(WEIGHTS), "path": "CondOT", "sampler": ODE,
           "digit_samplers": DIGIT_SAMPLERS}  # fmt: skip
    t0 = time.time()

    # ---------------------------------------------------------------- 1. oracle
    xs, ls = MIX.sample_with_labels(jax.random.PRNGKey(100), 200_000)
    exact_rate = bayes_rate(xs, ls)
    comp = MIX.component(2)
    m, s = finite_sample_floor(_ed, comp.sample, jax.random.PRNGKey(101), n, 10)
    ref2 = comp.sample(jax.random.PRNGKey(102), n)
    out["exact_conditional_accuracy"] = exact_rate
    out["energy_distance_floor"] = {"mean": float(m), "std": float(s), "n": n}
    out["oracle"] = toy_sweep("oracle", G.conditional_oracle(MIX, PATH), MIX.model_fn(PATH),
                              G.oracle_classifier(MIX, PATH), n, key, ref2)  # fmt: skip

    # ---------------------------------------------------------------- 2. learned toy models
    steps = args.train_steps or (600 if q else 4000)
    data_x, data_l = MIX.sample_with_labels(jax.random.PRNGKey(200), 100_000)
    arrays = {"x": C.as_f32(data_x), "label": np.asarray(data_l, np.int32)}
    net = M.MLP(hidden=(256, 256, 256), num_classes=K)
    p0 = M.init(net, jax.random.PRNGKey(201), jnp.zeros((1, 2)))
    loss = L.make_loss(M.make_apply_fn(net), PATH, num_classes=K, label_dropout=0.2)
    params = C.train(loss, p0, arrays, steps=steps, batch_size=256, lr=2e-3, seed=1,
                     label="toy CFG MLP")  # fmt: skip
    fn = M.model_fn(net, params)  # fn(x, t) is the unconditional (null-label) prediction
    clf_net = M.Classifier(K, hidden=(128, 128))
    c0 = M.init(clf_net, jax.random.PRNGKey(202), jnp.zeros((1, 2)))
    closs = G.make_classifier_loss(M.make_apply_fn(clf_net), PATH, num_classes=K)
    cparams = C.train(closs, c0, arrays, steps=steps // 2, batch_size=512, lr=3e-3, seed=2,
                      label="toy classifier")  # fmt: skip
    out["learned"] = toy_sweep("learned", fn, fn, M.model_fn(clf_net, cparams), n, key, ref2,
                               cg_starts=(0.0, 0.1))  # fmt: skip

    # ---------------------------------------------------------------- 3. digits CFG
    dx, dl = C.digits("train")
    evaluator = C.digit_classifier()
    out["digits_evaluator_test_accuracy"] = evaluator.test_accuracy
    dnet = M.MLP(hidden=(512, 512, 512), num_classes=10)
    dp0 = M.init(dnet, jax.random.PRNGKey(300), jnp.zeros((1, 64)))
    dloss = L.make_loss(M.make_apply_fn(dnet), PATH, num_classes=10, label_dropout=0.2)
    dparams = C.train(dloss, dp0, {"x": dx, "label": dl}, steps=args.train_steps or (500 if q else 6000),
                      batch_size=128, lr=1e-3, seed=3, label="digits CFG MLP")  # fmt: skip
    dfn = M.model_fn(dnet, dparams)
    nd = 200 if q else 1000
    dlabels = jnp.arange(nd, dtype=jnp.int32) % 10
    ref = jnp.asarray(dx)
    drows, grids = [], {}
    for w in WEIGHTS:
        guided = G.classifier_free(dfn, dlabels, scale=w)  # K = 10 read from the model
        row = {"w": w}
        for sname, kw in DIGIT_SAMPLERS.items():
            if sname == "sde" and w not in (0.0, 1.0, 3.0):
                continue
            x = sample(guided, PATH, jax.random.PRNGKey(301), (nd, 64), **kw).samples
            x = np.clip(C.as_f32(x), -1, 1)
            sfx = "" if sname == "ode" else "_sde"
            row[f"accuracy{sfx}"] = float(np.mean(evaluator.predict(x) == np.asarray(dlabels)))
            row[f"energy_distance_to_train{sfx}"] = float(_ed(jnp.asarray(x), ref))
            if sname == "ode":
                grids[w] = x[:40]
        drows.append(row)
        print(f"[digits] w={w}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if k != "w"))
    half = len(dx) // 2
    out["digits_data_floor_energy_distance"] = float(_ed(ref[:half], ref[half:]))
    out["digits"] = drows
    out["seconds"] = time.time() - t0

    # ---------------------------------------------------------------- figures
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for col, name in enumerate(("oracle", "learned")):
        rows = out[name]
        ax = axes[0, 2 * col]
        ax.plot(WEIGHTS, [r["cfg_accuracy"] for r in rows], "o-", label="classifier-free")
        ax.plot(WEIGHTS, [r["cg_accuracy"] for r in rows], "s--", label="classifier guidance")
        if "cg_start0.1_accuracy" in rows[0]:
            ax.plot(WEIGHTS, [r["cg_start0.1_accuracy"] for r in rows], "^:",
                    label="classifier guidance from t = 0.1")  # fmt: skip
        ax.axhline(exact_rate, color="k", lw=0.8, ls=":", label="exact conditional")
        ax.axhline(1 / K, color="gray", lw=0.8, ls=":", label="chance")
        ax.set(xlabel="w", ylabel="Bayes-classifier accuracy", title=f"{name}: accuracy")
        ax.legend(fontsize=8)
        ax = axes[0, 2 * col + 1]
        ax.semilogy(WEIGHTS, [max(r["cfg_energy_distance"], 1e-5) for r in rows], "o-", label="CFG")
        ax.semilogy(WEIGHTS, [max(r["cg_energy_distance"], 1e-5) for r in rows], "s--", label="CG")
        if "cg_start0.1_energy_distance" in rows[0]:
            ax.semilogy(WEIGHTS, [max(r["cg_start0.1_energy_distance"], 1e-5) for r in rows], "^:",
                        label="CG from t = 0.1")  # fmt: skip
        ax.axhline(float(m + 4 * s), color="k", lw=0.8, ls=":", label="floor m+4s")
        ax.set(xlabel="w", ylabel="energy distance to class 2", title=f"{name}: class-2 fidelity")
        ax.legend(fontsize=8)
    for j, w in enumerate((0.0, 1.0, 3.0)):
        ax = axes[1, j]
        r = next(r for r in out["learned"] if r["w"] == w)
        ax.scatter(*C.as_f32(data_x[:2000]).T, s=1, c="lightgray")
        ax.scatter(*r["cfg_samples"].T, s=2, label="learned CFG, class 2")
        ax.scatter(*next(o for o in out["oracle"] if o["w"] == w)["cfg_samples"].T, s=2, alpha=0.5,
                   label="oracle CFG, class 2")  # fmt: skip
        ax.set(title=f"w = {w}", aspect="equal", xlim=(-3.5, 3.5), ylim=(-3.5, 3.5))
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[1, 3]
    ax.plot(WEIGHTS, [r["accuracy"] for r in drows], "o-", label="accuracy (evaluator)")
    ax2 = ax.twinx()
    ax2.plot(WEIGHTS, [r["energy_distance_to_train"] for r in drows], "s--", c="C1",
             label="energy distance to train")  # fmt: skip
    ax.set(xlabel="w", title="digits CFG")
    ax.set_ylabel("accuracy")
    ax2.set_ylabel("energy distance", color="C1")
    fig.tight_layout()
    fig.savefig(args.out_dir / "guidance_sweep.png", dpi=110)
    fig, axes = plt.subplots(1, len(WEIGHTS), figsize=(3 * len(WEIGHTS), 3.4))
    for ax, w in zip(axes, WEIGHTS, strict=True):
        C.image_grid(ax, grids[w], 4, f"w = {w}")
    fig.tight_layout()
    fig.savefig(args.out_dir / "guidance_digits.png", dpi=110)
    for name in ("oracle", "learned"):
        for r in out[name]:
            for k in [k for k in r if k.endswith("_samples")]:
                r.pop(k)
    C.save_json(args.out_dir / "guidance_sweep.json", out)


if __name__ == "__main__":
    main()
