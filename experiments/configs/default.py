"""Default experiment, and the schema every other config inherits: flow matching on 8-Gaussians.

Conditional flow matching (CondOT path, velocity prediction) with an MLP on the 8-Gaussians ring
(radius 4, std 0.5), whose exact density the oracle knows. The whole run takes about a minute of
CPU time (1.5 to 3 minutes of wall time measured on a busy, shared 2-core machine). It is
evaluated with an adaptive ODE sampler (dopri5), a fixed-step Euler ODE and an SDE (the SDE
extension with constant sigma_t = 0.5, Euler-Maruyama):
sample quality (energy distance, sliced W2, MMD against held-out data, each with its
finite-sample floor), the exact NLL gap (model NLL minus the true entropy), NFE against quality,
and figures.

Launch (the README's main job)::

    python -m experiments.main --config experiments/configs/default.py --workdir /tmp/flowjax_run

Overrides: ``--config.training.num_steps=10000 --config.optim.lr=3e-4``. Local variant
(``default.py:local``): a smaller and shorter run for smoke tests.

Schema. Every key of every experiment must exist here (``experiments.schema.check_config``
rejects unknown keys, naming them); the open sections are ``path.options`` (keyword arguments of
:func:`flowjax.paths.get_path`) and ``sampling.samplers`` (named samplers, each with the keys of
:func:`sampler`). Keys whose value is ``None`` are typed placeholders: overridable from the
command line with a value of that type.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

#: Every key a sampler entry has (flat; ``experiments.samplers`` builds the method, solver, grid and
#: step-control objects of ``flowjax.sampling.sample`` from them). ``sigma`` is a string: a number
#: (``"0.5"``: constant sigma_t) or ``"reverse"`` (the reverse-time SDE). ``corrector_steps``: the
#: Langevin steps of ``pc`` and ``langevin``. ``churn, s_tmin, s_tmax, s_noise``: ``edm``'s
#: stochasticity (``s_tmax`` None: no upper limit). ``rtol, atol, error_norm, max_steps``: adaptive
#: steps. ``backend``: the loop of solver ``euler``. ``None`` entries are optional (typed
#: placeholders in the config, see ``_PLACEHOLDERS``).
SAMPLER_DEFAULTS = {
    "method": "ode",  # ode | sde | pc | langevin | edm
    "solver": "euler",  # euler, heun, ..., dpmpp_2m, dpmpp_3m, dpmpp_2s, unipc, unipc_3, shark
    "num_steps": 100,
    "adaptive": False,
    "rtol": 1e-5,
    "atol": 1e-5,
    "error_norm": "max",  # max (every example) | rms (the batch's RMS)
    "max_steps": 4096,
    "time_grid": "uniform",  # uniform | edm | logsnr
    "rho": 7.0,  # the edm grid's exponent
    "sigma": "0",
    "t_start": None,
    "t_end": None,
    "denoise_final": False,
    "corrector_steps": 0,
    "snr": 0.16,
    "churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": None,
    "s_noise": 1.0,
    "guidance_scale": None,  # class-conditional models: classifier-free guidance weight w
    "backend": "auto",  # auto | scan | diffrax
}
_PLACEHOLDERS = {"t_start": float, "t_end": float, "s_tmax": float, "guidance_scale": float}


def sampler(**overrides) -> ml_collections.ConfigDict:
    """A sampler entry: :data:`SAMPLER_DEFAULTS` with ``overrides`` (unknown keys raise)."""
    unknown = sorted(set(overrides) - set(SAMPLER_DEFAULTS))
    if unknown:
        raise KeyError(f"unknown sampler keys {unknown}; valid keys: {sorted(SAMPLER_DEFAULTS)}")
    values = dict(SAMPLER_DEFAULTS)
    # fresh placeholders per entry: a shared FieldReference would tie the entries together
    values.update({k: config_dict.placeholder(t) for k, t in _PLACEHOLDERS.items()})
    entry = ml_collections.ConfigDict(values)
    entry.update(overrides)
    return entry


def parse_arg(arg: str | None, valid: tuple[str, ...]) -> set[str]:
    """The comma-separated options of a config string (``file.py:opt1,opt2``), checked."""
    opts = {a.strip() for a in (arg or "").split(",") if a.strip()}
    unknown = sorted(opts - set(valid))
    if unknown:
        raise ValueError(
            f"unknown config option(s) {unknown}; this config accepts: {', '.join(valid) or 'none'}"
        )
    return opts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The default experiment (``arg``: ``""`` or ``"local"``)."""
    opts = parse_arg(arg, ("local",))
    config = ml_collections.ConfigDict()
    config.seed = 0

    # ------------------------------------------------------------------ data
    config.data = data = ml_collections.ConfigDict()
    data.name = (
        "eight_gaussians"  # toy (checkerboard, moons, eight_gaussians, spirals), digits, tfds
    )
    data.data_dir = (
        ""  # tfds: where data sets are prepared ("" = $TFDS_DATA_DIR or ~/tensorflow_datasets)
    )
    data.train_split = "train"
    data.eval_split = "test"
    data.num_train = config_dict.placeholder(
        int
    )  # toy: size of the fixed training sample (100,000)
    data.num_eval = config_dict.placeholder(int)  # toy: size of the held-out sample (10,000)
    data.dequantize = False  # images: uniform dequantization (needed for valid bits/dim)
    data.random_flip = config_dict.placeholder(bool)  # images: None = the data set's default
    data.in_memory = config_dict.placeholder(bool)  # tfds: None = when it fits in 1 GiB

    # ------------------------------------------------------------------ model
    config.model = model = ml_collections.ConfigDict()
    model.name = "mlp"  # mlp | unet
    model.num_classes = 0  # 0: unconditional; K: class-conditional on the data's K labels
    model.dtype = "float32"  # computation dtype (bfloat16: mixed precision, float32 params)
    model.mlp = ml_collections.ConfigDict(
        {
            "hidden": (128, 128, 128),
            "activation": "silu",
            # What the network sees as time (flowjax.models.TimeFeatures): time_input t | log_snr |
            # edm, time_embedding none | sinusoidal | fourier | learned. Plain [x, t] needed the
            # fewest Dopri5 evaluations at equal quality (experiments/RESULTS.md, issue 20).
            "time_input": "t",
            "time_embedding": "none",
            "time_embed_dim": 64,
            "sinusoidal_scale": 1.0,  # DDPM's 1000 made the field oscillate in t (6.5x the NFE)
            "fourier_scale": 1.0,  # std of the (initial) Fourier frequencies
            # a second time input: None (set from loss.objective: "r" for meanflow, "d" for
            # shortcut, none otherwise), "r" or "d"; a value contradicting the objective fails
            "second_time": config_dict.placeholder(str),
        }
    )
    model.unet = ml_collections.ConfigDict(
        {
            "channels": 64,
            "channel_mults": (1, 2, 2),
            "num_res_blocks": 2,
            "attention_resolutions": config_dict.placeholder(
                tuple
            ),  # None: every level but the first
            "dropout": 0.1,
            "num_groups": 32,
            "head_dim": 64,
            "time_input": "t",  # t | log_snr | edm (see model.mlp)
            "time_embedding": "sinusoidal",  # none | sinusoidal | fourier | learned
            "sinusoidal_scale": 1.0,
            "fourier_scale": 1.0,
            "second_time": config_dict.placeholder(str),  # see model.mlp.second_time
        }
    )

    # ------------------------------------------------------------------ path and loss
    config.path = ml_collections.ConfigDict()
    config.path.name = "condot"  # condot | vp_linear | vp_cosine | subvp | ve | edm
    config.path.options = ml_collections.ConfigDict()  # keyword arguments of get_path

    config.loss = loss = ml_collections.ConfigDict()
    loss.prediction = "velocity"  # velocity | score | eps | x1 | v
    loss.weighting = "uniform"  # see flowjax.losses.loss_weight
    loss.time_sampler = "uniform"  # uniform | logit_normal | stratified | antithetic
    loss.t_margin = 1e-3
    loss.label_dropout = 0.0  # classifier-free guidance training (needs model.num_classes)
    loss.coupling = ""  # "" (independent) | ot | sinkhorn
    loss.reduction = "mean"
    loss.min_snr_gamma = 5.0
    # The training objective (issue 16): fm (flow matching: make_loss with the keys above), or a
    # few-step objective with its own section below: meanflow (make_meanflow_loss), shortcut
    # (make_shortcut_loss), consistency (improved consistency training) or cd_oracle (consistency
    # distillation from the exact oracle velocity of a toy data set that has one). The few-step
    # objectives use an unconditional velocity-named model; MeanFlow and shortcut models get their
    # second time input (model.<net>.second_time "r" / "d") automatically.
    loss.objective = "fm"  # fm | meanflow | shortcut | consistency | cd_oracle
    loss.meanflow = ml_collections.ConfigDict(
        {
            "time_sampler": "logit_normal",  # of both times (flowjax.losses.sample_two_times)
            "equal_fraction": 0.75,  # fraction of the batch with r = t (plain flow matching)
            "adaptive_power": 1.0,  # weight 1 / (error + eps)^power; 0: plain squared error
            "adaptive_eps": 1e-3,
        }
    )
    loss.shortcut = ml_collections.ConfigDict(
        {
            "max_steps": 128,  # a power of two: the smallest step size is 1 / max_steps
            "bootstrap_fraction": 0.25,  # fraction of the batch trained on self-consistency
            "time_sampler": "uniform",  # the flow-matching part's times
        }
    )
    # consistency (CT) and cd_oracle (CD): the consistency_output parameterisation (sigma_data,
    # sigma_min), the noise levels (sigma_max, rho) and the pseudo-Huber c (None: 0.00054 sqrt(D))
    loss.consistency = ml_collections.ConfigDict(
        {
            "sigma_data": 0.5,
            "sigma_min": 0.002,
            "sigma_max": 80.0,
            "rho": 7.0,
            "huber_c": config_dict.placeholder(float),
            # CT only: s1 + 1 levels (iCT's final discretisation; the training loop passes no
            # step to the loss, so there is no doubling curriculum: a fixed s1) drawn lognormally
            "s1": 1280,
            "p_mean": -1.1,
            "p_std": 2.0,
            # CD only: levels, the teacher's solver between adjacent levels, the weighting
            "num_levels": 18,
            "teacher_solver": "heun",  # euler | heun
            "weighting": "ict",  # ict | uniform
        }
    )

    # ------------------------------------------------------------------ optimizer and training
    config.optim = optim = ml_collections.ConfigDict()
    optim.name = "adamw"  # adamw | adam | sgd
    optim.lr = 2e-3
    optim.schedule = "cosine"  # constant | cosine | linear
    optim.warmup_steps = 100
    optim.end_lr = 0.0
    optim.weight_decay = 0.0
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.eps = 1e-8
    optim.grad_clip = config_dict.placeholder(float)  # global-norm clipping (None: off)

    config.training = training = ml_collections.ConfigDict()
    training.num_steps = 3000
    training.batch_size = 512  # global, over all devices and processes
    training.grad_accum_steps = 1  # micro-batches per step (same update, 1/k of the activations)
    training.remat = "none"  # none | blocks | dots | blocks_dots (activation rematerialisation)
    training.parallelism = "jit"  # jit (compiler-partitioned) | shard_map (explicit collectives)
    training.log_every = 250
    training.checkpoint_every = 1000
    training.max_to_keep = 3
    training.ema_decay = 0.999  # 0: no EMA
    training.ema_warmup = True  # decay min(ema_decay, (1 + step) / (10 + step))
    training.tensorboard = True

    # ------------------------------------------------------------------ sampling
    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.num_samples = 2000
    sampling.batch_size = 2000  # samples per sampler call
    sampling.use_ema = True
    sampling.samplers = ml_collections.ConfigDict(
        {
            "ode_dopri5": sampler(solver="dopri5", adaptive=True, rtol=1e-4, atol=1e-4),
            "ode_euler": sampler(solver="euler", num_steps=100),
            # the SDE extension with constant sigma_t = 0.5 (Euler-Maruyama); on CondOT the
            # reverse-time SDE's sigma_t^2 = 2 (1 - t) / t is infinite at the noise end
            "sde_euler": sampler(method="sde", solver="euler", num_steps=200, sigma="0.5"),
        }
    )

    # ------------------------------------------------------------------ evaluation
    config.eval = ev = ml_collections.ConfigDict()
    ev.num_eval = 2000  # held-out points for the sample-quality statistics (n = min with samples)
    ev.metrics = ("energy", "sliced_w2", "mmd")  # low-dimensional data
    ev.floor_repeats = 5
    ev.num_projections = 256  # sliced W2
    ev.nll = ml_collections.ConfigDict(
        {
            "enabled": True,
            "num_examples": 1000,  # held-out points (images: bits/dim on this many)
            "batch_size": 1000,
            "solver": "dopri5",
            "num_steps": 0,  # 0: adaptive (rtol/atol); N: fixed grid of N steps
            "rtol": 1e-4,  # 1e-4 and 1e-5 differ by ~5e-4 nats here, 10x below the gap's stderr
            "atol": 1e-4,
            "divergence": "exact",  # exact | hutchinson
            "num_probes": 1,
            "shared_steps": False,  # True: one adaptive solve of the whole batch (RMS error)
            "num_dequantizations": 1,  # images
        }
    )
    ev.nfe_sweep = ml_collections.ConfigDict(
        {
            "samplers": ("ode_euler", "sde_euler", "ode_dopri5"),  # which samplers to sweep
            "num_steps": (4, 8, 16, 32, 64),  # fixed-step samplers
            "tolerances": (1e-2, 1e-3),  # adaptive samplers (rtol = atol)
            "num_samples": 2000,
            # toy data with an oracle: the same sweep of the exact oracle velocity with these ODE
            # solvers (the best any flow-matching teacher reaches), drawn as reference curves
            "oracle_solvers": (),  # e.g. ("euler", "heun", "dpmpp_2m")
        }
    )
    # Images: Frechet distance in the features of a small classifier trained here on the same
    # data set (digits, MNIST; cached under classifier_dir), and Inception FID/KID from a local
    # weights file (nothing is downloaded).
    ev.classifier_fd = True
    ev.classifier_dir = ""  # "" = $FLOWJAX_CACHE/classifiers or ~/.cache/flowjax/classifiers
    ev.classifier_steps = 2000
    ev.inception = False  # Inception FID/KID: needs inception_weights
    ev.inception_weights = (
        ""  # path to the Inception-v3 weights (.npz, see experiments/evaluators/inception.py)
    )
    ev.inception_batch_size = 50
    ev.kid_subset_size = 1000
    ev.kid_num_subsets = 100

    # ------------------------------------------------------------------ figures
    config.figures = figures = ml_collections.ConfigDict()
    figures.enabled = True
    figures.num_points = 2000  # scatter / histogram points
    figures.field_times = (0.1, 0.4, 0.7, 0.95)  # quiver plots of velocity and score
    figures.field_grid = 21
    figures.num_trajectories = 64
    figures.density_grid = 40  # model log-density on an N x N grid (0: off)
    figures.grid_images = 64  # image grids
    figures.dpi = 110

    if "local" in opts:
        training.num_steps = 300
        training.batch_size = 256
        training.log_every = 100
        training.checkpoint_every = 100
        model.mlp.hidden = (64, 64)
        sampling.num_samples = 1000
        sampling.batch_size = 1000
        ev.num_eval = 1000
        ev.nll.num_examples = 200
        ev.nll.batch_size = 200
        ev.nll.rtol = ev.nll.atol = 1e-4
        ev.nfe_sweep.num_steps = (4, 16)
        ev.nfe_sweep.tolerances = (1e-2,)
        ev.nfe_sweep.num_samples = 500
        figures.density_grid = 20
    return config
