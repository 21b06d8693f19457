"""CIFAR-10 (32x32x3, tensorflow-datasets) with a U-Net at the published baselines' settings, for GPU/TPU.

* ``eps`` (DDPM, Ho et al. 2020): VP-linear path (beta 0.1 to 20, the continuous form of DDPM's
  1e-4 .. 0.02 over 1,000 steps), noise prediction with L_simple; U-Net base width 128, channel
  multipliers (1, 2, 2, 2), 2 residual blocks, self-attention at 16x16, dropout 0.1; Adam 2e-4,
  5,000 warm-up steps, gradient clipping at 1, EMA 0.9999, batch 128, 800k steps, random flips.
* ``fm`` (default; conditional flow matching as in Lipman et al. 2023 / Tong et al. 2024's
  CIFAR-10 runs): CondOT path, velocity prediction, the same U-Net and optimizer, 400k steps.

The U-Net is flowjax's (adaptive group norm conditioning), at DDPM's widths, so parameter counts
are close to but not exactly DDPM's 35.7M. FID/KID need Inception-v3 weights as a local file
(``--config.eval.inception_weights``; see experiments/evaluators/inception.py); the project's classifier
FD is off here (it is for digits and MNIST). Options ``cond`` (class-conditional, label dropout
0.1, a guided sampler) and ``local`` (tiny U-Net, few steps: CPU smoke runs, mock data tests).

The data must be prepared once (this downloads it)::

    python -m flowjax.data.prepare --dataset cifar10 --data_dir ~/tensorflow_datasets

Launch::

    python -m experiments.main --config experiments/configs/cifar10.py:eps --workdir runs/cifar10_ddpm \
        --config.eval.inception=True --config.eval.inception_weights=/path/to/pt_inception.npz
    python -m experiments.main --config experiments/configs/cifar10.py:fm --workdir runs/cifar10_fm
"""

from experiments.configs import default, digits


def get_config(arg: str | None = None):
    opts = default.parse_arg(arg, ("fm", "eps", "cond", "local"))
    config = default.get_config()
    config.data.name = "cifar10"
    config.data.dequantize = True
    config.model.name = "unet"
    u = config.model.unet
    u.channels, u.channel_mults, u.num_res_blocks = 128, (1, 2, 2, 2), 2
    u.attention_resolutions, u.dropout, u.num_groups = (16,), 0.1, 32
    config.optim.name = "adam"
    config.optim.lr = 2e-4
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 5000
    config.optim.grad_clip = 1.0
    config.training.num_steps = 800_000 if "eps" in opts else 400_000
    config.training.batch_size = 128
    config.training.log_every = 1000
    config.training.checkpoint_every = 10_000
    config.training.ema_decay = 0.9999
    config.training.ema_warmup = False
    config.sampling.num_samples = 50_000
    config.sampling.batch_size = 1000
    config.eval.metrics = ()
    config.eval.classifier_fd = False
    config.eval.nll.num_examples = 10_000
    config.eval.nll.batch_size = 500
    config.eval.nll.divergence = "hutchinson"
    config.eval.nll.num_probes = 1
    config.eval.nll.rtol = config.eval.nll.atol = 1e-5
    config.eval.nfe_sweep.samplers = ()  # each point would need 50k samples and Inception
    config.eval.kid_subset_size = 1000
    config.figures.grid_images = 64
    digits.formulation(config, opts)
    config.eval.nfe_sweep.samplers = ()
    if "local" in opts:
        digits.local(config)
        config.eval.metrics = ()
        config.eval.nfe_sweep.samplers = ()
    return config
