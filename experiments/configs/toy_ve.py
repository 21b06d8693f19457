"""Score matching on toy 2-D data: the VE path, score prediction (NCSN / score SDE's VE SDE).

The variance-exploding path ``x_t = x1 + sigma(t) eps`` with ``sigma`` from ``sigma_max = 10``
(about the largest distance between data points, score SDE's rule) down to ``sigma_min = 0.02``,
trained by denoising score matching with the ``sigma^2`` weighting (``weighting = "eps"``, the
usual lambda(sigma) = sigma^2). VE never reaches the data exactly: the model's density is that of
data blurred by ``N(0, 0.02^2 I)``, and its prior ``N(0, 10^2 I)`` stands for ``p_0``; both
approximations enter the NLL gap (by well under 0.01 nats here).

Options: ``eight_gaussians`` (default) or ``checkerboard``; ``local``.

Launch::

    python -m experiments.main --config experiments/configs/toy_ve.py:eight_gaussians --workdir runs/toy_ve_8g
"""

from experiments.configs import default, toy_fm


def get_config(arg: str | None = None):
    opts = default.parse_arg(arg, (*toy_fm.DATASETS, "local"))
    config = toy_fm.get_config(arg)
    config.path.name = "ve"
    config.path.options = {"sigma_min": 0.02, "sigma_max": 10.0}
    config.loss.prediction = "score"
    config.loss.weighting = "eps"  # lambda(sigma) = sigma^2
    local = "local" in opts
    config.sampling.samplers = {
        "ode_dopri5": default.sampler(solver="dopri5", adaptive=True, rtol=1e-4, atol=1e-4),
        "ode_euler": default.sampler(solver="euler", num_steps=200, time_grid="edm"),
        "sde_reverse": default.sampler(
            method="sde",
            solver="euler",
            num_steps=400 if not local else 100,
            sigma="reverse",
            time_grid="edm",
        ),
        "pc": default.sampler(
            method="pc",
            solver="euler",
            num_steps=200 if not local else 50,
            sigma="reverse",
            corrector_steps=1,
            time_grid="edm",
        ),
    }
    config.eval.nfe_sweep.samplers = ("ode_euler", "sde_reverse", "ode_dopri5")
    return config
