"""The classifier Frechet distance of image samples (``config.eval.classifier_*``).

The Frechet distance between Gaussian fits of the penultimate-layer features of a small CNN
trained by flowjax on the same data set (:mod:`.classifier`), for each sampler, next to its data
floor (the same statistic between the training images and the held-out reference).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from experiments import io
from experiments.evaluators import Context, SweepMetric
from experiments.evaluators.classifier import classifier_features, load_or_train_classifier
from experiments.evaluators.features import frechet_distance, gaussian_stats

if TYPE_CHECKING:
    from experiments.experiment import Experiment

__all__ = ["Evaluator"]


class Evaluator:
    """Classifier FD of every sampler (trains, or loads from ``classifier_dir``, the classifier)."""

    def __init__(self, exp: Experiment, *, classifier_dir: str, classifier_steps: int):
        self.exp, self.cache_dir, self.num_steps = exp, classifier_dir or None, classifier_steps
        self._fd = None

    @classmethod
    def from_config(cls, exp: Experiment) -> Evaluator | None:
        """The evaluator, or None when it does not apply (off, not labelled images)."""
        ev = exp.config.eval
        if not (ev.classifier_fd and exp.train_ds.is_image and exp.train_ds.num_classes):
            return None
        return cls(exp, classifier_dir=ev.classifier_dir, classifier_steps=ev.classifier_steps)

    def run(self, ctx: Context) -> dict[str, Any]:
        from experiments.experiment import reference

        exp = self.exp
        module, params, info = load_or_train_classifier(
            exp.train_ds,
            exp.eval_ds,
            cache_dir=self.cache_dir,
            num_steps=self.num_steps,
            log=io.log,
        )
        ref = reference(exp, 10**9)["x"]
        ref_stats = gaussian_stats(classifier_features(module, params, ref))
        train = reference(exp, len(ref), "train")["x"]
        floor = frechet_distance(
            *gaussian_stats(classifier_features(module, params, train)), *ref_stats
        )

        def fd(x: np.ndarray) -> float:
            return frechet_distance(
                *gaussian_stats(classifier_features(module, params, x)), *ref_stats
            )

        self._fd = SweepMetric("classifier_fd", fd, {"floor_mean": floor, "floor_std": 0.0})
        result = {
            "description": (
                "Frechet distance between Gaussian fits of the penultimate-layer features of a "
                "small CNN trained by flowjax on this data set (not an Inception FID)"
            ),
            "classifier": info,
            "reference": f"{len(ref)} {exp.config.data.eval_split} images",
            "data_floor": floor,
            "data_floor_description": (
                f"the same statistic between {len(train)} training images and the reference"
            ),
            "samplers": {name: fd(s.samples) for name, s in ctx.sets.items()},
        }
        io.log(
            "classifier FD: "
            + ", ".join(f"{k} {v:.4g}" for k, v in result["samplers"].items())
            + f" (data floor {floor:.4g})"
        )
        return result

    def sweep_metric(self, ctx: Context, num_samples: int) -> SweepMetric:
        """The classifier FD as the NFE sweep's statistic (after :meth:`run`)."""
        if self._fd is None:
            raise RuntimeError("run the classifier FD evaluator before asking for its metric")
        return self._fd
