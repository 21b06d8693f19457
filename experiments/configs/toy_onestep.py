"""One-step and few-step generation on 8-Gaussians (issue 16): MeanFlow, shortcut and consistency
models trained end to end, sampled in 1, 2 and 4 steps (exact NFE).

Options (``toy_onestep.py:OPTION,...``, one objective):

* ``meanflow`` (default): MeanFlow (``loss.objective = "meanflow"``; the MLP gets its second time
  ``r`` automatically); samplers ``meanflow_1``, ``meanflow_2``, ``meanflow_4``;
* ``shortcut``: shortcut model conditioned on the step size ``d``; ``shortcut_1/2/4``;
* ``consistency``: improved consistency training (fixed discretisation, see default.py);
  ``consistency_1/2/4`` (multistep consistency sampling with re-noising);
* ``cd_oracle``: consistency distillation from the exact oracle velocity of the mixture;
  ``consistency_1/2/4``;
* ``local``: a tiny, short run (smoke tests).

eval.json: each sampler's NFE and sample quality (energy distance, sliced W2, MMD with their
finite-sample floors); the NFE sweep draws the exact oracle velocity's Euler, Heun and DPM-Solver++
(2M) curves (the best any flow-matching teacher of this data reaches) as the reference of the
figure ``figures/nfe_quality.png``, with the few-step samplers' points. Measured numbers (energy
distance at 1/2/4 steps, wall time): experiments/RESULTS.md, section "One-step generation".

Launch::

    python -m experiments.main --config experiments/configs/toy_onestep.py --workdir runs/toy_onestep_meanflow
    python -m experiments.main --config experiments/configs/toy_onestep.py:cd_oracle --workdir runs/toy_onestep_cd
"""

from experiments.configs import default

OBJECTIVES = ("meanflow", "shortcut", "consistency", "cd_oracle")
#: the sampling method of each objective
METHOD = {"meanflow": "meanflow", "shortcut": "shortcut", "consistency": "consistency"}
METHOD["cd_oracle"] = "consistency"
STEPS = (1, 2, 4)


def few_step_samplers(method: str, steps: tuple[int, ...] = STEPS) -> dict:
    """One sampler entry per step count: ``{method}_{n}``."""
    return {f"{method}_{n}": default.sampler(method=method, num_steps=n) for n in steps}


def objective(config, opts: set[str]) -> str:
    """Set ``loss.objective`` from the options (one of :data:`OBJECTIVES`; default meanflow)."""
    chosen = [o for o in OBJECTIVES if o in opts]
    if len(chosen) > 1:
        raise ValueError(f"choose one objective, got {chosen}")
    obj = chosen[0] if chosen else "meanflow"
    config.loss.objective = obj
    config.sampling.samplers = few_step_samplers(METHOD[obj])
    config.eval.nll.enabled = False  # a few-step model's quality is its samples'
    return obj


def get_config(arg: str | None = None):
    opts = default.parse_arg(arg, (*OBJECTIVES, "local"))
    local = "local" in opts
    config = default.get_config("local" if local else None)
    config.data.name = "eight_gaussians"
    config.path.name = "condot"
    obj = objective(config, opts)
    sweep = config.eval.nfe_sweep
    sweep.samplers = ()
    sweep.oracle_solvers = ("euler", "heun", "dpmpp_2m")
    sweep.num_steps = (1, 2, 4, 8, 16, 32)
    sweep.num_samples = config.sampling.num_samples
    config.figures.density_grid = 0
    if local:
        sweep.num_steps = (1, 2)
        return config

    config.model.mlp.hidden = (256, 256, 256)
    config.optim.lr = 1e-3
    config.training.num_steps = 6000
    config.training.batch_size = 512
    config.training.log_every = 500
    config.training.checkpoint_every = 2000
    if obj == "meanflow":
        config.loss.meanflow.adaptive_power = 0.0
        config.loss.meanflow.equal_fraction = 0.5
    elif obj == "consistency":
        config.loss.consistency.s1 = 160
    return config
