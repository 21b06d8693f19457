"""Inception FID and KID of image samples (``config.eval.inception*``, ``kid_*``).

The network and its weights file are :mod:`.inception`; nothing is downloaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from experiments.evaluators.features import (
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
)
from experiments.evaluators.inception import inception_features, load_inception_params

if TYPE_CHECKING:
    from experiments.evaluators import Context
    from experiments.experiment import Experiment

__all__ = ["Evaluator"]


class Evaluator:
    """FID and KID of every sampler against the held-out images."""

    def __init__(
        self,
        exp: Experiment,
        *,
        inception_weights: str,
        inception_batch_size: int,
        kid_subset_size: int,
        kid_num_subsets: int,
    ):
        self.exp, self.weights, self.batch_size = exp, inception_weights, inception_batch_size
        self.subset_size, self.num_subsets = kid_subset_size, kid_num_subsets

    @classmethod
    def from_config(cls, exp: Experiment) -> Evaluator | None:
        """The evaluator, or None when ``eval.inception`` is off."""
        ev = exp.config.eval
        if not ev.inception:
            return None
        return cls(
            exp,
            inception_weights=ev.inception_weights,
            inception_batch_size=ev.inception_batch_size,
            kid_subset_size=ev.kid_subset_size,
            kid_num_subsets=ev.kid_num_subsets,
        )

    def run(self, ctx: Context) -> dict[str, Any]:
        from experiments.experiment import reference

        params = load_inception_params(self.weights)
        ref = reference(self.exp, 10**9)["x"]
        ref_f = inception_features(params, ref, batch_size=self.batch_size)
        ref_stats = gaussian_stats(ref_f)
        out: dict[str, Any] = {
            "weights": str(self.weights),
            "reference": f"{len(ref)} {self.exp.config.data.eval_split} images",
            "samplers": {},
        }
        for name, s in ctx.sets.items():
            f = inception_features(params, s.samples, batch_size=self.batch_size)
            kid, kid_std = kernel_inception_distance(
                f, ref_f, subset_size=self.subset_size, num_subsets=self.num_subsets
            )
            out["samplers"][name] = {
                "fid": frechet_distance(*gaussian_stats(f), *ref_stats),
                "kid": kid,
                "kid_std": kid_std,
                "num_samples": len(f),
            }
        return out
