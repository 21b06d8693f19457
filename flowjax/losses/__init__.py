"""Training losses for every parameterization on any Gaussian path.

``make_loss(apply_fn, path, prediction=..., weighting=..., time_sampler=..., ...)`` builds the pure
``loss_fn(params, batch, key) -> (loss, aux)``; its pieces are public too: the objectives
(:func:`cfm_loss`, :func:`dsm_loss`, :func:`ddpm_loss`, :func:`x1_loss`, :func:`v_loss`,
:func:`prediction_loss`), the weightings (:func:`loss_weight`, :func:`conversion_weight`,
:func:`snr`), the time samplers (:func:`sample_time` and one function per sampler), label dropout
(:func:`drop_labels`) and the minibatch OT coupling (:func:`couple`, :func:`ot_pairing`).
Few-step objectives (issue 16): :func:`make_meanflow_loss`, :func:`make_shortcut_loss`,
:func:`make_consistency_training_loss`, :func:`make_consistency_distillation_loss`.
"""

from flowjax.losses._conditioning import check_labels, drop_labels, null_labels
from flowjax.losses._consistency import (
    ConsistencyModelFn,
    consistency_apply_fn,
    consistency_levels,
    consistency_output,
    ict_num_levels,
    karras_sigmas,
    make_consistency_distillation_loss,
    make_consistency_training_loss,
    pseudo_huber,
)
from flowjax.losses._coupling import COUPLINGS, couple, ot_pairing, sinkhorn_pairing
from flowjax.losses._make_loss import ApplyFn, LossFn, make_loss
from flowjax.losses._meanflow import make_meanflow_loss, meanflow_target, sample_two_times
from flowjax.losses._objectives import (
    LOSSES,
    REDUCTIONS,
    cfm_loss,
    ddpm_loss,
    dsm_loss,
    prediction_loss,
    squared_error,
    v_loss,
    x1_loss,
)
from flowjax.losses._shortcut import make_shortcut_loss, shortcut_target
from flowjax.losses._time_sampling import (
    DEFAULT_T_MARGIN,
    TIME_SAMPLERS,
    antithetic_time,
    logit_normal_time,
    sample_time,
    stratified_time,
    time_interval,
    uniform_time,
)
from flowjax.losses._weighting import WEIGHTINGS, conversion_weight, loss_weight, snr

__all__ = [
    "COUPLINGS",
    "DEFAULT_T_MARGIN",
    "LOSSES",
    "REDUCTIONS",
    "TIME_SAMPLERS",
    "WEIGHTINGS",
    "ApplyFn",
    "ConsistencyModelFn",
    "LossFn",
    "antithetic_time",
    "cfm_loss",
    "check_labels",
    "consistency_apply_fn",
    "consistency_levels",
    "consistency_output",
    "conversion_weight",
    "couple",
    "ddpm_loss",
    "drop_labels",
    "dsm_loss",
    "ict_num_levels",
    "karras_sigmas",
    "logit_normal_time",
    "loss_weight",
    "make_consistency_distillation_loss",
    "make_consistency_training_loss",
    "make_loss",
    "make_meanflow_loss",
    "make_shortcut_loss",
    "meanflow_target",
    "null_labels",
    "ot_pairing",
    "prediction_loss",
    "pseudo_huber",
    "sample_time",
    "sample_two_times",
    "shortcut_target",
    "sinkhorn_pairing",
    "snr",
    "squared_error",
    "stratified_time",
    "time_interval",
    "uniform_time",
    "v_loss",
    "x1_loss",
]
