"""flowjax: flow matching, score-based diffusion and DDPM as one model, in JAX.

A Gaussian probability path ``x_t = alpha(t) x1 + beta(t) eps`` (noise at ``t = 0``, data at
``t = 1``) fixes the score, velocity, noise and clean-data predictions up to closed-form
conversions. Submodules:

* :mod:`flowjax.paths` — the paths (CondOT, VP, sub-VP, VE, EDM, user schedules).
* :mod:`flowjax.parameterization` — conversions between velocity, score, eps, x1 and v.
* :mod:`flowjax.oracle` — exact Gaussian-mixture ground truth on any path.
* :mod:`flowjax.distances` — energy distance, MMD, sliced Wasserstein.
* :mod:`flowjax.data` — toy 2-D sets, digits, tensorflow-datasets sources; resumable iterators.
* :mod:`flowjax.likelihood` — exact log-likelihood (exact / Hutchinson divergence), bits/dim.
* :mod:`flowjax.losses` — CFM / DSM / DDPM / x1 / v losses, weightings, time samplers, OT coupling.
* :mod:`flowjax.models` — Flax MLP and U-Net (the only Flax modules), behind a pytree boundary.
* :mod:`flowjax.sampling` — one ``sample()``: flow / probability-flow ODE, SDE of any sigma_t,
  Langevin and predictor-corrector, classifier-free guidance, NFE reported.
* :mod:`flowjax.parallel` — meshes, batch and parameter (fsdp) sharding, multi-process
  initialisation, sampling and likelihoods over all devices of all processes.
* :mod:`flowjax.training` — train state, optimizer, sharded train step (``jit`` or ``shard_map``),
  EMA, checkpoints, metrics, mixed precision, gradient accumulation, remat.
* :mod:`flowjax.guidance` — classifier guidance, oracle conditional models and classifiers.
* :mod:`flowjax.inverse` — posterior sampling for ``y = A x + n``: exact (oracle), DPS, PiGDM.
* :mod:`flowjax.reflow` — rectified flow: ODE couplings, retraining, straightness.
"""

from flowjax import (
    data,
    distances,
    guidance,
    inverse,
    likelihood,
    losses,
    models,
    oracle,
    parallel,
    parameterization,
    paths,
    reflow,
    training,
)
from flowjax._validation import checked, checking
from flowjax.oracle import GaussianMixture
from flowjax.parameterization import convert
from flowjax.paths import (
    EDM,
    PREDICTIONS,
    VE,
    AbstractPath,
    CondOT,
    GaussianPath,
    SubVP,
    VPCosine,
    VPLinear,
    get_path,
)
from flowjax.sampling import SampleResult, sample

__version__ = "0.1.0"

__all__ = [
    "EDM",
    "PREDICTIONS",
    "VE",
    "AbstractPath",
    "CondOT",
    "GaussianMixture",
    "GaussianPath",
    "SampleResult",
    "SubVP",
    "VPCosine",
    "VPLinear",
    "checked",
    "checking",
    "convert",
    "data",
    "distances",
    "get_path",
    "guidance",
    "inverse",
    "likelihood",
    "losses",
    "models",
    "oracle",
    "parallel",
    "parameterization",
    "paths",
    "reflow",
    "sample",
    "sampling",
    "training",
]
