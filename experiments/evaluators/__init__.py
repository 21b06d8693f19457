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

Each evaluator is ``Evaluator.from_config(exp)`` and ``run(ctx) -> dict`` of a :class:`Context`;
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

__all__ = ["Context", "Evaluator", "SweepMetric"]


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
