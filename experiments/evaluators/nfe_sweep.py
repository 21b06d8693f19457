"""Quality against the number of function evaluations (``config.eval.nfe_sweep``).

Each swept sampler runs at several step counts (fixed-step samplers: ``num_steps``) or
tolerances (adaptive ones: ``rtol = atol`` in ``tolerances``), every run from the same key, and
is scored with the sample-quality statistic (low-dimensional data) or the classifier FD (images).

The loop is the library's one NFE sweep, ``flowjax.reflow.nfe_curve``, run with the experiment's
own draw (any configured sampler: SDE, adaptive, guided, as it samples in the run), so that the
sweep's ends match the samplers' numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from experiments import io, samplers
from flowjax.reflow import nfe_curve

if TYPE_CHECKING:
    from experiments.evaluators import Context, SweepMetric
    from experiments.experiment import Experiment

__all__ = ["Evaluator"]


class Evaluator:
    """The sweep of ``samplers`` (names of configured samplers)."""

    def __init__(
        self,
        exp: Experiment,
        *,
        samplers: tuple[str, ...],
        num_steps: tuple[int, ...],
        tolerances: tuple[float, ...],
        num_samples: int,
    ):
        self.exp, self.samplers = exp, tuple(samplers)
        self.num_steps, self.tolerances, self.num_samples = num_steps, tolerances, num_samples

    @classmethod
    def from_config(cls, exp: Experiment) -> Evaluator:
        return cls(exp, **exp.config.eval.nfe_sweep)

    def _variants(self, kw: dict[str, Any]) -> list[dict[str, Any]]:
        if kw["adaptive"]:
            return [{"rtol": float(tol), "atol": float(tol)} for tol in self.tolerances]
        return [{"num_steps": int(n)} for n in self.num_steps]

    def run(self, ctx: Context, metric: SweepMetric) -> dict[str, Any]:
        """``{"metric", "num_samples", "floor", "curves": {sampler: [row per setting]}}``."""
        curves: dict[str, list[dict[str, Any]]] = {}
        n, key = self.num_samples, ctx.keys["sweep"]
        for name in self.samplers:
            kw = self.exp.samplers[name]

            def run(kw: dict[str, Any] = kw, **var: Any) -> tuple[Any, float, dict[str, float]]:
                x, _, nfes, secs = samplers.draw(self.exp, ctx.fn, {**kw, **var}, n, n, key)
                return x, float(np.mean(nfes)), {"seconds": secs}

            rows = nfe_curve(run, self._variants(kw), metric.fn, score_name=metric.name)
            curves[name] = rows
            io.log(
                f"NFE sweep {name}: "
                + ", ".join(f"NFE {r['nfe']:g}: {metric.name} {r[metric.name]:.4g}" for r in rows)
            )
        return {"metric": metric.name, "num_samples": n, "floor": metric.floor, "curves": curves}
