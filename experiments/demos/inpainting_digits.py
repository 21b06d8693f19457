"""Inpainting and denoising 8x8 digits with a small learned prior: DPS and PiGDM.

Usage (from the repository root): ``python -m experiments.demos.inpainting_digits [--out-dir DIR] [--quick]``

Prior: an unconditional MLP velocity model (CondOT) on flattened digits in ``[-1, 1]`` (train
split). Test digits (test split), one measurement each:

* **inpainting**: the top four rows observed (``Inpainting`` mask, 32 of 64 pixels), noise std 0.05;
* **denoising**: every pixel observed (``Identity``), noise std 0.4.

Methods (``CONFIGS``): DPS (the Gaussian likelihood through the denoiser, scale 1 and 0.01), DPS
with Chung et al.'s normalised step (scale 1 and 10), PiGDM (``data_var`` = the mean pixel variance
of the training digits) with the measurement term from ``t = 0`` and from ``t = 0.1``
(``guidance_start``; the DPS variants start at 0.1), each with the reverse SDE (Euler-Maruyama, 300
steps) and the probability-flow ODE (Heun, 50 steps). Four posterior samples per image: errors of
one sample, and of their average (an estimate of the posterior mean, the MMSE estimate). There is no exact posterior for a learned prior, so we report the error against the true
digit (MSE over the unobserved pixels for inpainting, over all pixels for denoising; PSNR over the
image), the measurement residual ``|y - A x|`` against the noise level, and whether a
logistic-regression digit classifier still reads the true class. Baselines: the mean training image
in the missing pixels (inpainting), the noisy measurement itself (denoising).

Writes ``inpainting_digits.json`` and ``inpainting_digits.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import flowjax as fj
from experiments.demos import _common as C
from flowjax import inverse as I
from flowjax import losses as L
from flowjax import models as M
from flowjax.sampling import sample

PATH = fj.CondOT()
SAMPLERS = {
    "sde": dict(method="sde", num_steps=300),  # sde: SDE(sigma="reverse")
    "ode": dict(solver="heun", num_steps=50),
}
#: name -> (method, scale, guidance_start)
CONFIGS = {
    "dps_s1_start0.1": ("dps", 1.0, 0.1),
    "dps_s0.01_start0.1": ("dps", 0.01, 0.1),
    "dpsnorm_s1_start0.1": ("dps_normalized", 1.0, 0.1),
    "dpsnorm_s10_start0.1": ("dps_normalized", 10.0, 0.1),
    "pigdm_start0": ("pigdm", 1.0, 0.0),
    "pigdm_start0.1": ("pigdm", 1.0, 0.1),
}
SAMPLES_PER_IMAGE = 4


def build(config, prior, op, y, noise, data_var):
    """The posterior model_fn of one configuration."""
    method, scale, start = CONFIGS[config]
    kw = dict(path=PATH, noise_std=noise, scale=scale, guidance_start=start)
    if method == "pigdm":
        return I.pigdm(prior, op, y, data_var=data_var, **kw)
    return I.dps(prior, op, y, normalize=method == "dps_normalized", **kw)


def metrics(x, truth, op, y, unobserved, evaluator, labels, noise):
    """Errors against the true digits over the samples that stayed finite; diverged ones counted."""
    x = np.asarray(x, np.float32)
    ok = np.all(np.isfinite(x), axis=1)
    out = {"diverged_fraction": float(1 - ok.mean()), "noise_std": noise}
    if not ok.any():
        return out | {"mse": float("nan"), "accuracy": 0.0}
    x = np.clip(x[ok], -1, 1)
    err = (x - truth[ok]) ** 2
    mse_all = float(err.mean())
    resid = np.asarray(op.apply(jnp.asarray(x))) - np.asarray(y)[ok]
    out |= {
        "mse": mse_all,
        "psnr_db": float(10 * np.log10(4.0 / mse_all)),  # peak-to-peak range 2
        "residual_rms": float(np.sqrt(np.mean(resid**2))),
        # diverged samples count as misread
        "accuracy": float(np.sum(evaluator.predict(x) == labels[ok]) / len(ok)),
    }
    if unobserved is not None:
        out["mse_unobserved"] = float(err[:, unobserved].mean())
    return out


def main():
    args = C.parse_args(__doc__, "inpainting_digits")
    q = args.quick
    t0 = time.time()
    xtr, _ = C.digits("train")
    xte, lte = C.digits("test")
    nimg = 16 if q else 100
    truth, labels = xte[:nimg], lte[:nimg]
    evaluator = C.digit_classifier()
    data_var = float(xtr.var(axis=0).mean())

    net = M.MLP(hidden=(512, 512, 512))
    p0 = M.init(net, jax.random.PRNGKey(1), jnp.zeros((1, 64)))
    params = C.train(L.make_loss(M.make_apply_fn(net), PATH), p0, {"x": xtr},
                     steps=args.train_steps or (500 if q else 8000), batch_size=128, lr=1e-3, seed=2,
                     label="digits prior MLP")  # fmt: skip
    prior = M.model_fn(net, params)
    uncond = C.as_f32(sample(prior, PATH, jax.random.PRNGKey(3), (40, 64), solver="heun",
                             num_steps=50).samples)  # fmt: skip

    mask = np.zeros((8, 8), bool)
    mask[:4] = True
    tasks = {
        "inpainting": (I.Inpainting(mask.reshape(64)), 0.05, np.flatnonzero(~mask.reshape(64))),
        "denoising": (I.Identity((64,)), 0.4, None),
    }
    out = {"n_images": nimg, "data_var": data_var, "samplers": SAMPLERS,
           "evaluator_test_accuracy": evaluator.test_accuracy, "tasks": {}}  # fmt: skip
    shown = {}
    for task, (op, noise, unobserved) in tasks.items():
        y = I.measure(jax.random.PRNGKey(10), op, jnp.asarray(truth), noise)
        if task == "inpainting":
            base = np.broadcast_to(xtr.mean(0), truth.shape).copy()
            base[:, mask.reshape(64)] = np.asarray(y)
            baseline_name = "mean image in the missing pixels"
        else:
            base = np.asarray(y)
            baseline_name = "the noisy measurement"
        rows = {"baseline": metrics(base, truth, op, y, unobserved, evaluator, labels, noise)}
        rows["baseline"]["what"] = baseline_name
        shown[task] = {"truth": truth, "measurement": np.asarray(op.adjoint(y)), "baseline": base}
        k = SAMPLES_PER_IMAGE
        y_rep = jnp.repeat(y, k, axis=0)  # k posterior samples per image
        for config in CONFIGS:
            model = build(config, prior, op, y_rep, noise, data_var)
            for sname, kw in SAMPLERS.items():
                key = f"{config}_{sname}"
                x = sample(model, PATH, jax.random.PRNGKey(11), (nimg * k, 64), **kw).samples
                x = C.as_f32(x).reshape(nimg, k, 64)
                r = metrics(x[:, 0], truth, op, y, unobserved, evaluator, labels, noise)
                # the average of k samples estimates the posterior mean (the MMSE estimate)
                finite = np.all(np.isfinite(x), axis=(1, 2))
                avg = np.where(finite[:, None], np.clip(x, -1, 1).mean(1), np.nan)
                m = metrics(avg, truth, op, y, unobserved, evaluator, labels, noise)
                r |= {f"mean_of_{k}_{n}": val for n, val in m.items() if n.startswith("mse")}
                rows[key] = r
                shown[task][key] = np.clip(np.nan_to_num(x[:, 0]), -1, 1)
                print(f"[{task}] {key}: " + ", ".join(
                    f"{n}={val:.4f}" for n, val in r.items() if isinstance(val, float)))  # fmt: skip
        print(f"[{task}] baseline ({baseline_name}): "
              + ", ".join(f"{k}={v:.4f}" for k, v in rows["baseline"].items()
                          if isinstance(v, float)))  # fmt: skip
        out["tasks"][task] = {"noise_std": noise, "results": rows}
    out["seconds"] = time.time() - t0

    cols = ["truth", "measurement", "baseline"] + [
        f"{c}_{s}" for c in ("dps_s0.01_start0.1", "dpsnorm_s10_start0.1", "pigdm_start0.1")
        for s in SAMPLERS
    ]  # fmt: skip
    fig, axes = plt.subplots(2, len(cols) + 1, figsize=(2.2 * (len(cols) + 1), 5.2))
    for i, task in enumerate(tasks):
        for j, c in enumerate(cols):
            title = (
                c
                if c in ("truth", "measurement", "baseline")
                else (f"{c}\nMSE {out['tasks'][task]['results'][c]['mse']:.3f}")
            )
            C.image_grid(
                axes[i, j], shown[task][c][:16], 4, f"{task}: {title}" if j == 0 else title
            )
        C.image_grid(axes[i, -1], uncond[:16], 4, "prior samples")
    fig.tight_layout()
    fig.savefig(args.out_dir / "inpainting_digits.png", dpi=110)
    C.save_json(args.out_dir / "inpainting_digits.json", out)


if __name__ == "__main__":
    main()
