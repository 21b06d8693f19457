"""DDPM on toy 2-D data: the VP path with a linear beta schedule, noise (eps) prediction.

The continuous-time VP-linear path (beta from 0.1 to 20, DDPM's 1e-4 .. 0.02 over 1000 steps) with
the uniform eps loss (DDPM's L_simple). The same trained model is sampled with the probability-flow
ODE and with the reverse-time SDE (``sigma = "reverse"``: score SDE's reverse diffusion), and its
exact NLL comes from the probability-flow ODE.

Options: ``eight_gaussians`` (default) or ``checkerboard``; ``local``.

Launch::

    python -m experiments.main --config experiments/configs/toy_ddpm.py:eight_gaussians --workdir runs/toy_ddpm_8g
"""

from experiments.configs import default, toy_fm


def get_config(arg: str | None = None):
    opts = default.parse_arg(arg, (*toy_fm.DATASETS, "local"))
    config = toy_fm.get_config(arg)
    config.path.name = "vp_linear"
    config.loss.prediction = "eps"
    config.loss.weighting = "uniform"
    local = "local" in opts
    config.sampling.samplers = {
        "ode_dopri5": default.sampler(solver="dopri5", adaptive=True, rtol=1e-4, atol=1e-4),
        "ode_euler": default.sampler(solver="euler", num_steps=100),
        "sde_reverse": default.sampler(
            method="sde", solver="euler", num_steps=200 if not local else 100, sigma="reverse"
        ),
    }
    config.eval.nfe_sweep.samplers = ("ode_euler", "sde_reverse", "ode_dopri5")
    return config
