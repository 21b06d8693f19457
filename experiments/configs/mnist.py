"""MNIST (28x28, tensorflow-datasets) with a U-Net, for GPU/TPU.

There is no single canonical published MNIST setting for these models; this config scales the DDPM
CIFAR-10 recipe (Ho et al. 2020) to 28x28 grayscale: base width 64, channel multipliers (1, 2, 2)
(28, 14, 7), 2 residual blocks per level, self-attention at 14x14 and 7x7, dropout 0.1; Adam at
2e-4 with 5,000 warm-up steps, gradient clipping at 1, EMA 0.9999, batch 128, 100k steps; uniform
dequantization (bits/dim with the +7 bits offset of 8-bit data in [-1, 1]).

Options: ``fm`` (default: CondOT, velocity) or ``eps`` (VP-linear, noise prediction, reverse SDE);
``cond`` (class-conditional, label dropout 0.1, a guided sampler with w = 2); ``local`` (a tiny
U-Net and a few steps: CPU smoke runs and tests under tfds.testing.mock_data).

The data must be prepared once (this downloads it)::

    python -m flowjax.data.prepare --dataset mnist --data_dir ~/tensorflow_datasets

Launch::

    python -m experiments.main --config experiments/configs/mnist.py:fm --workdir runs/mnist_fm
    python -m experiments.main --config experiments/configs/mnist.py:eps,cond --workdir runs/mnist_eps_cond
"""

from experiments.configs import default, digits


def get_config(arg: str | None = None):
    opts = default.parse_arg(arg, ("fm", "eps", "cond", "local"))
    config = default.get_config()
    config.data.name = "mnist"
    config.data.dequantize = True
    config.model.name = "unet"
    u = config.model.unet
    u.channels, u.channel_mults, u.num_res_blocks = 64, (1, 2, 2), 2
    u.attention_resolutions, u.dropout, u.num_groups = (14, 7), 0.1, 32
    config.optim.name = "adam"
    config.optim.lr = 2e-4
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 5000
    config.optim.grad_clip = 1.0
    config.training.num_steps = 100_000
    config.training.batch_size = 128
    config.training.log_every = 1000
    config.training.checkpoint_every = 5000
    config.training.ema_decay = 0.9999
    config.training.ema_warmup = False
    config.sampling.num_samples = 10_000
    config.sampling.batch_size = 1000
    config.eval.metrics = ()  # pixel-space statistics mean little at 784 dimensions
    config.eval.nll.num_examples = 10_000
    config.eval.nll.batch_size = 1000
    config.eval.nll.divergence = "hutchinson"
    config.eval.nll.num_probes = 1
    config.eval.nll.rtol = config.eval.nll.atol = 1e-5
    config.eval.nfe_sweep.num_steps = (10, 20, 50, 100, 200)
    config.eval.nfe_sweep.tolerances = (1e-2, 1e-3, 1e-4)
    config.eval.nfe_sweep.num_samples = 5000
    config.eval.classifier_steps = 5000
    config.figures.grid_images = 100
    digits.formulation(config, opts)
    if "local" in opts:
        digits.local(config)
        config.eval.metrics = ()
    return config
