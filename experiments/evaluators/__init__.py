"""Evaluators of a trained experiment, each a small module built from its config section.

``experiments.evaluate`` restores the parameters, draws the samples and runs, in order:

* :mod:`.quality`: energy / sliced W2 / MMD against held-out data with finite-sample floors
  (low-dimensional data; ``config.eval.metrics``, ``num_eval``, ``floor_repeats``,
  ``num_projections``);
* :mod:`.classifier_fd`: the Frechet distance in the features of a small classifier trained on
  the same data set (:mod:`.classifier` is the network and its training job);
* :mod:`.inception_fd`: Inception FID / KID (:mod:`.inception` is the network and its weights);
* :mod:`.nll`: NLL and the exact NLL gap, or bits/dim (``config.eval.nll``);
* :mod:`.nfe_sweep`: quality against the number of function evaluations
  (``config.eval.nfe_sweep``).

Each evaluator is ``Evaluator.from_config(exp)`` (its config keys as keyword arguments) and
``run(ctx) -> dict`` of a :class:`Context`; the NFE sweep's ``run`` also takes the
:class:`SweepMetric` that quality or the classifier FD provides;
:mod:`.features` holds the feature-space arithmetic (Frechet distance, KID) they share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from experiments.experiment import Experiment
    from experiments.sample import SampleSet

__all__ = [
    "STATISTICS",
    "Context",
    "Evaluator",
    "FeatureClassifier",
    "InceptionV3",
    "InceptionWeightsError",
    "SweepMetric",
    "classifier_features",
    "convert_torch_state_dict",
    "data_floors",
    "disjoint_subsets",
    "exact_log_prob_fn",
    "flatten_params",
    "frechet_distance",
    "gaussian_stats",
    "inception_features",
    "inception_param_shapes",
    "kernel_inception_distance",
    "load_inception_params",
    "load_or_train_classifier",
    "nll_summary",
    "sample_quality",
    "unflatten_params",
]


@dataclasses.dataclass
class Context:
    """What every evaluator may use: the experiment, the restored model and its samples."""

    exp: Experiment
    fn: Any  # the model function of the restored parameters
    sets: Mapping[str, SampleSet]  # each sampler's samples
    keys: Mapping[str, Any]  # "floor", "stat", "nll", "sweep"


@dataclasses.dataclass
class SweepMetric:
    """The statistic the NFE sweep measures, with its floor at the sweep's sample size."""

    name: str
    fn: Callable[[np.ndarray], float]
    floor: dict[str, Any]


class Evaluator(Protocol):
    """An evaluator: built from the config, run on a :class:`Context`, returning its numbers."""

    def run(self, ctx: Context) -> dict[str, Any]: ...


# The measuring functions of the evaluators, importable from the package (after the classes
# above, which the evaluator modules import from here).
from experiments.evaluators.classifier import (  # noqa: E402
    FeatureClassifier,
    classifier_features,
    load_or_train_classifier,
)
from experiments.evaluators.features import (  # noqa: E402
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
)
from experiments.evaluators.inception import (  # noqa: E402
    InceptionV3,
    InceptionWeightsError,
    convert_torch_state_dict,
    flatten_params,
    inception_features,
    inception_param_shapes,
    load_inception_params,
    unflatten_params,
)
from experiments.evaluators.nll import exact_log_prob_fn, nll_summary  # noqa: E402
from experiments.evaluators.quality import (  # noqa: E402
    STATISTICS,
    data_floors,
    disjoint_subsets,
    sample_quality,
)
