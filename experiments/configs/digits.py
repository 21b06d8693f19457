"""scikit-learn's 8x8 digits (1,500 train / 297 test images, 17 levels) with a U-Net.

Options (``digits.py:OPTION,...``):

* ``fm`` (default): flow matching, CondOT path, velocity prediction;
* ``eps``: DDPM, VP-linear path, noise prediction (L_simple), reverse-SDE sampling;
* ``cond``: class-conditional on the 10 digits with label dropout 0.1 (classifier-free guidance;
  adds a guided sampler with w = 2);
* ``meanflow``: MeanFlow (issue 16) on the flow-matching path, a U-Net with the second time ``r``;
  samplers ``meanflow_1``, ``meanflow_2``, ``meanflow_4`` (classifier FD at 1, 2, 4 NFE); no NLL
  and no NFE sweep; the same 3,000 training steps as ``fm`` (MeanFlow's JVP through the U-Net:
  3,000 steps took 20.5 min here against fm's 18; the whole run 23 min);
* ``consistency``: improved consistency training (fixed discretisation of ``s1 + 1`` levels),
  samplers ``consistency_1/2/4``; no NLL, no sweep (21 min measured);
* ``local``: a tiny U-Net and a few steps (smoke tests).

Trained on uniformly dequantized data, so eval.json's bits/dim is the standard dequantization bound
(the digits' 17 levels in [-1, 1]: +log2(17/2) = 3.09 bits/dim offset). Sample quality: a grid,
the Frechet distance in the features of a small classifier trained by flowjax on the digits
(cached; see experiments/evaluators/classifier.py) with its data floor, and the pixel-space energy distance
with its finite-sample floor. Sized for a CPU: 34-44 minutes measured on a busy, shared 2-core
machine (about 20 of them training); results in experiments/RESULTS.md.

Launch::

    python -m experiments.main --config experiments/configs/digits.py:fm --workdir runs/digits_fm
    python -m experiments.main --config experiments/configs/digits.py:eps --workdir runs/digits_eps
    python -m experiments.main --config experiments/configs/digits.py:meanflow --workdir runs/digits_meanflow
"""

from experiments.configs import default
from experiments.configs.toy_onestep import few_step_samplers


def few_step(config, objective: str) -> None:
    """A few-step objective (``meanflow``, ``consistency``): its samplers at 1, 2 and 4 steps."""
    config.loss.objective = objective
    config.sampling.samplers = few_step_samplers(objective)
    config.eval.nll.enabled = False  # a few-step model's quality is its samples'
    config.eval.nfe_sweep.samplers = ()
    if objective == "meanflow":
        config.loss.meanflow.adaptive_power = 0.0
        config.loss.meanflow.equal_fraction = 0.5
    else:
        config.loss.consistency.s1 = 160


def formulation(config, opts: set[str]) -> None:
    """Flow matching (``fm``, default) or DDPM (``eps``): path, prediction and samplers."""
    chosen = opts & {"fm", "eps", "meanflow", "consistency"}
    if len(chosen) > 1:
        raise ValueError(f"choose one of fm, eps, meanflow, consistency; got {sorted(chosen)}")
    local = "local" in opts
    ode_steps = 100 if not local else 4
    sde_steps = 200 if not local else 4
    if "eps" in opts:
        config.path.name = "vp_linear"
        config.loss.prediction = "eps"
        sde = default.sampler(method="sde", solver="euler", num_steps=sde_steps, sigma="reverse")
    else:
        config.path.name = "condot"
        config.loss.prediction = "velocity"
        sde = default.sampler(method="sde", solver="euler", num_steps=sde_steps, sigma="0.5")
    config.sampling.samplers = {
        "ode_dopri5": default.sampler(solver="dopri5", adaptive=True, rtol=1e-3, atol=1e-3),
        "ode_euler": default.sampler(solver="euler", num_steps=ode_steps),
        "sde_euler": sde,
    }
    config.eval.nfe_sweep.samplers = ("ode_euler", "sde_euler", "ode_dopri5")
    if "cond" in opts:
        config.model.num_classes = 10
        config.loss.label_dropout = 0.1
        config.sampling.samplers.guided_w2 = default.sampler(
            solver="euler", num_steps=ode_steps, guidance_scale=2.0
        )


def get_config(arg: str | None = None):
    opts = default.parse_arg(arg, ("fm", "eps", "meanflow", "consistency", "cond", "local"))
    config = default.get_config()
    config.data.name = "digits"
    config.data.dequantize = True
    config.model.name = "unet"
    config.model.unet.channels = 32
    config.model.unet.channel_mults = (1, 2)
    config.model.unet.num_res_blocks = 1
    config.model.unet.dropout = 0.1
    config.model.unet.num_groups = 8
    # Sinusoidal features of t (not 1000 t): 43 instead of 55 Dopri5 evaluations at 1e-3 at equal
    # or better quality (experiments/RESULTS.md, issue 20).
    config.model.unet.time_input = "t"
    config.model.unet.time_embedding = "sinusoidal"
    config.model.unet.sinusoidal_scale = 1.0
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.optim.grad_clip = 1.0
    config.training.num_steps = 3000
    config.training.batch_size = 64
    config.training.log_every = 250
    config.training.checkpoint_every = 500
    config.training.ema_decay = 0.999
    config.sampling.num_samples = 500
    config.sampling.batch_size = 500
    config.eval.num_eval = 297
    config.eval.nll.num_examples = 297
    config.eval.nll.batch_size = 297
    config.eval.nll.divergence = "hutchinson"  # exact would cost 64 JVPs per evaluation
    config.eval.nll.num_probes = 4
    config.eval.nll.rtol = config.eval.nll.atol = 1e-4
    config.eval.nfe_sweep.num_steps = (4, 8, 16, 32, 64)
    config.eval.nfe_sweep.tolerances = (1e-2, 1e-3)
    config.eval.nfe_sweep.num_samples = 500
    config.eval.classifier_steps = 2000
    config.figures.grid_images = 100
    formulation(config, opts)
    if "local" in opts:
        local(config)
    for objective in ("meanflow", "consistency"):
        if objective in opts:
            if "cond" in opts:
                raise ValueError(f"{objective} is unconditional: drop the option 'cond'")
            few_step(config, objective)
    return config


def local(config) -> None:
    """A tiny U-Net, a few steps and cheap evaluation settings (CPU smoke tests)."""
    u = config.model.unet
    u.channels, u.channel_mults, u.num_res_blocks = 8, (1, 2), 1
    u.attention_resolutions, u.num_groups, u.dropout = (), 4, 0.0
    config.training.num_steps = 6
    config.training.batch_size = 16
    config.training.log_every = 3
    config.training.checkpoint_every = 3
    config.optim.warmup_steps = 0
    config.sampling.num_samples = 32
    config.sampling.batch_size = 32
    config.sampling.samplers.ode_dopri5.max_steps = 64
    config.eval.nll.num_examples = 8
    config.eval.nll.batch_size = 8
    config.eval.nll.solver = "euler"
    config.eval.nll.num_steps = 2
    config.eval.nll.num_probes = 1
    config.eval.num_eval = 32
    config.eval.floor_repeats = 2
    config.eval.nfe_sweep.num_steps = (2,)
    config.eval.nfe_sweep.tolerances = ()
    config.eval.nfe_sweep.samplers = ("ode_euler",)
    config.eval.nfe_sweep.num_samples = 32
    config.eval.classifier_steps = 20
    config.figures.grid_images = 16
